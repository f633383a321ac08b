"""A uvicorn server on a free loopback port, with the settings `domainft serve` uses (test helper)."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, serve_params=None):
    """Serve ``app`` in a thread until the block ends; yields its base URL ``http://127.0.0.1:<port>``."""
    import uvicorn

    from domainft.config import Params
    from domainft.serving.http import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", free_port(), serve_params or Params().serve, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(20)
