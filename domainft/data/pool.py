"""Worker processes for the data stages that are safe whatever this process has already run."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

# Imported once by the fork server, so that workers start with them loaded: installed packages only
# (see process_pool).
_PRELOAD = ["numpy", "orjson", "ftfy", "rensa"]


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes started by the ``forkserver`` method where the platform has
    it (Linux, macOS), else ``spawn``.

    Not ``fork``: a forked child inherits the locks but not the threads of its parent, and rensa's
    Rust thread pool (rayon, started by the first large MinHash batch) then deadlocks the child;
    so would OpenBLAS or torch threads. The fork server is a fresh process; it preloads only
    installed packages (:data:`_PRELOAD`), not domainft: it imports with a fresh interpreter's
    ``sys.path`` (Python 3.11 ignores the parent's there), so a preloaded domainft was whatever copy
    that finds (an editable install of another checkout), and the workers ran it instead of the
    parent's. Workers get the parent's ``sys.path`` and import domainft themselves. Arguments and
    results travel pickled.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
    else:
        ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx)
