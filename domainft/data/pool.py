"""Worker processes for the data stages that are safe whatever this process has already run."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes started by the ``forkserver`` method where the platform has
    it (Linux, macOS), else ``spawn``.

    Not ``fork``: a forked child inherits the locks but not the threads of its parent, and rensa's
    Rust thread pool (rayon, started by the first large MinHash batch) then deadlocks the child;
    so would OpenBLAS or torch threads. The fork server is a fresh process that imported only
    :mod:`domainft.data.prepare`, so its children start in milliseconds with that import done.
    Arguments and results travel pickled.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["domainft.data.prepare", "domainft.data.split"])
    else:
        ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx)
