"""No-op ``dvc repro`` benchmark: wall seconds of a ``dvc repro`` that has nothing to rerun.

    .venv/bin/python bench/noop_bench.py --project /path/to/a/reproduced/clone [--runs 7]

The project must be fully reproduced first (``dvc status`` clean apart from the always-run
fingerprint stage). In ABAB order it times ``--runs`` pairs of

- ``dvc repro`` (A): what a user waits for; it runs the fingerprint stage (always changed) and
  checks every other stage;
- ``dvc status`` (B): the reference measured in the same run, DVC's own cost of reading dvc.yaml,
  dvc.lock and params.yaml and checking every dep without running anything;

and the fingerprint stage alone (``python -m domainft.stages fingerprint``). It reports the median
and the range of each in seconds and the ratio of the medians repro / status; the floor is a
no-op ``dvc repro`` under 2 s. Nothing in the project changes (fingerprints are rewritten only when
their content differs). The load average before and after is printed: on a shared machine, quote it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone


def _time(cmd: list[str], cwd: str) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True, help="a reproduced DVC project (this repo's clone or an init project)")
    ap.add_argument("--runs", type=int, default=7, help="ABAB pairs (default 7)")
    args = ap.parse_args(argv)
    dvc = [sys.executable, "-m", "dvc"]
    out = subprocess.run(dvc + ["status", "--json"], cwd=args.project, capture_output=True, text=True, check=True)
    changed = sorted(k for k in json.loads(out.stdout or "{}") if k != "fingerprint")  # always changed
    if changed:
        print(f"error: stages not reproduced: {', '.join(changed)}; run dvc repro first", file=sys.stderr)
        return 1
    _time(dvc + ["repro"], args.project)  # settle caches (fingerprint hash cache, DVC's state db)
    load0 = os.getloadavg()
    repro, status, fingerprint = [], [], []
    for _ in range(args.runs):
        repro.append(_time(dvc + ["repro"], args.project))
        status.append(_time(dvc + ["status"], args.project))
        fingerprint.append(_time([sys.executable, "-m", "domainft.stages", "fingerprint"], args.project))
    load1 = os.getloadavg()
    print(f"# no-op dvc repro, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {load0[0]:.2f} -> {load1[0]:.2f}, {args.runs} ABAB runs")
    for name, xs in (("dvc repro (no-op)", repro), ("dvc status (reference)", status),
                     ("fingerprint stage alone", fingerprint)):
        print(f"{name:26s} median {statistics.median(xs):.2f} s  range {min(xs):.2f}-{max(xs):.2f} s")
    print(f"ratio repro / status (medians): {statistics.median(repro) / statistics.median(status):.2f}")
    print(f"floor < 2 s: {'met' if statistics.median(repro) < 2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
