"""Progress of long loops (generation, scoring, validation): a tqdm bar on a terminal, else log lines.

One policy for every stage: on a TTY (stderr) a tqdm bar with rate and ETA; without one (DVC
capturing output, CI, a log file) one INFO line per ``every`` share of the total, e.g.
``generate tuned: 40% (13/32) 41 s elapsed, ETA 62 s``, so a 13-minute evaluation is never silent.
"""
from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("domainft.progress")


class Progress:
    """Counts ``update(n)`` calls toward ``total`` items.

    Args:
        total: items to process (> 0; 0 reports nothing).
        desc: what is counted, e.g. ``generate base``.
        every: share of ``total`` between log lines without a TTY (0 < every <= 1), default 0.1.
        tty: force the bar on or off (default: ``sys.stderr.isatty()``).
    """

    def __init__(self, total: int, desc: str, every: float = 0.1, tty: bool | None = None):
        self.total, self.desc, self.every, self.done = int(total), desc, every, 0
        self.start = time.monotonic()
        self._next = every
        self._bar = None
        if (sys.stderr.isatty() if tty is None else tty) and self.total:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit="item", leave=True)
        self.lines: list[str] = []  # the log lines written (non-TTY), for callers and tests

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self._bar is not None:
            self._bar.update(n)
            return
        if not self.total:
            return
        share = self.done / self.total
        if share + 1e-12 >= self._next or self.done == self.total:
            elapsed = time.monotonic() - self.start
            eta = elapsed / share * (1 - share) if share else float("nan")
            line = (f"{self.desc}: {share:.0%} ({self.done}/{self.total}) {elapsed:.0f} s elapsed, "
                    f"ETA {eta:.0f} s")
            self.lines.append(line)
            log.info("%s", line)
            while self._next <= share + 1e-12:
                self._next += self.every

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
