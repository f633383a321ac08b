"""The HTTP server around the app: uvicorn's h11 protocol with read deadlines, and graceful shutdown.

uvicorn times out idle keep-alive connections only: a client that opens a connection and sends
its headers (or its body) a byte at a time holds the connection, and a task, for as long as it
likes (slow-loris; measured on main 6cd2c37: a stalled body stayed open 40 s+). Two deadlines
close that:

* ``header_timeout_s``: from the moment a connection opens (or its previous response ends) to the
  end of the request head;
* ``body_timeout_s``: from the end of the head to the end of the body.

On expiry the client gets ``408`` with an OpenAI-style error body and ``Connection: close`` (unless
a response is already under way), and the connection is closed; the app's pending ``receive()``
answers ``http.disconnect``. The limits are those of nginx's ``client_header_timeout`` /
``client_body_timeout``, applied to the whole head / body instead of to each read.

Graceful shutdown (SIGTERM or SIGINT) is uvicorn's: the listening socket closes, idle connections
close, and requests in flight, also those still queued in the engine, finish within
``shutdown_timeout_s`` before the engine stops.
"""
from __future__ import annotations

import asyncio
import json

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


def _timeout_response(what: str, seconds: float) -> bytes:
    body = json.dumps({"error": {"message": f"request {what} not received within {seconds:g} s",
                                 "type": "invalid_request_error", "param": None, "code": "request_timeout"}}).encode()
    head = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode()
    return head + body


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head and on its body (seconds)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "head" | "body" while a deadline runs
        super().connection_made(transport)
        self._arm("head", self.header_timeout_s)

    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self._phase = what
        self._deadline = self.loop.call_later(seconds, self._expired, what, seconds)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        cycle = self.cycle
        if cycle is None or self.transport.is_closing():
            return
        if cycle is not before:  # a new request head arrived
            if cycle.more_body:
                self._arm("body", self.body_timeout_s)
            else:
                self._disarm()
        elif self._phase == "body" and not cycle.more_body:  # its body is complete
            self._disarm()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm("head", self.header_timeout_s)  # the next request's head (a pipelined one disarms it)
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _expired(self, what: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if what == "body" else None
        if cycle is None or not cycle.response_started:
            self.transport.write(_timeout_response(what, seconds))
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() returns http.disconnect, its sends are dropped
            cycle.message_event.set()
        self.logger.warning("closing connection from %s: request %s not received within %g s",
                            "%s:%d" % self.client if self.client else "?", what, seconds)
        self.transport.close()


def uvicorn_config(app, host: str, port: int, serve_params, log_level: str = "info") -> uvicorn.Config:
    """uvicorn settings for ``app`` from params ``serve`` (deadlines, keep-alive, shutdown grace).

    Args:
        app: the ASGI app (:func:`domainft.serving.app.create_app`).
        host, port: bind address (port 0 = any free port).
        serve_params: :class:`domainft.config.ServeParams` (``header_timeout_s``, ``body_timeout_s``,
            ``keep_alive_s``, ``shutdown_timeout_s``).
    """
    protocol = type("DomainftH11Protocol", (DeadlineH11Protocol,), {
        "header_timeout_s": serve_params.header_timeout_s, "body_timeout_s": serve_params.body_timeout_s})
    return uvicorn.Config(app, host=host, port=port, http=protocol, log_level=log_level,
                          timeout_keep_alive=serve_params.keep_alive_s,
                          timeout_graceful_shutdown=serve_params.shutdown_timeout_s)
