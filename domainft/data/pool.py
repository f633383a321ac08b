"""Worker processes for the data stages that are safe whatever this process has already run."""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

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
    parent's. Workers get the parent's ``sys.path`` and import domainft themselves, from the
    parent's copy (:data:`_SAME_DOMAINFT`). Arguments and results travel pickled.

    Workers die with this process (:data:`_DIE_WITH_PARENT`): killed with ``kill -9``, it leaves no
    worker computing for minutes.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
    else:
        ctx = multiprocessing.get_context("spawn")
    root = str(Path(sys.modules["domainft"].__file__).resolve().parent.parent)
    # The initializer cannot be a function of domainft: unpickling it would import domainft first.
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=exec,
                               initargs=(_SAME_DOMAINFT.format(root=root) + _DIE_WITH_PARENT.format(pid=os.getpid()), {}))


# Run by each worker first: make ``import domainft`` find the parent's copy (in folder ``root``). The
# parent's sys.path is not always enough: multiprocessing replaces an entry "" (``python -c``, a
# REPL) with the folder it was imported in, so a process that changed folder before that import
# gave its workers another copy (an editable install elsewhere).
_SAME_DOMAINFT = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.find_spec("domainft")
if spec is None or not spec.origin or Path(spec.origin).resolve().parent.parent != Path({root!r}):
    sys.path.insert(0, {root!r})
"""


# Run by each worker after _SAME_DOMAINFT: a daemon thread that ends the worker within
# POLL seconds of the parent's death (``kill -9`` runs no cleanup, and a busy worker never reads the
# closed pipe). On Linux the kernel also sends SIGKILL when the worker's own parent (the fork
# server, which exits with the parent) dies (prctl PR_SET_PDEATHSIG).
_DIE_WITH_PARENT = """
import os, sys, threading, time
def _watch(pid={pid}, poll=0.5):
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass
        time.sleep(poll)
threading.Thread(target=_watch, name="domainft-parent-watch", daemon=True).start()
if sys.platform.startswith("linux"):
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass
"""
