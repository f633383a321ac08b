"""Worker processes die with their parent: kill -9 of a stage leaves no worker computing."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")  # a zombie is dead


def test_workers_exit_within_seconds_of_a_kill_9_of_their_parent(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from domainft.data.pool import process_pool
        if __name__ == "__main__":
            pool = process_pool(2)
            futures = [pool.submit(time.sleep, 120) for _ in range(2)]
            time.sleep(0.5)
            print(" ".join(str(p) for p in pool._processes), flush=True)
            time.sleep(120)
    """)
    (tmp_path / "parent.py").write_text(script)
    p = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        workers = [int(x) for x in p.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
        assert not left, f"workers {left} still running 5 s after their parent was killed"
    finally:
        p.kill()
        for w in workers if "workers" in dir() else []:
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass
