"""DVC's entry point of every stage: ``python -m domainft.stages <stage> [--params params.yaml]``.

Run from the repository root, ``python -m`` imports this checkout's ``domainft`` (the current folder
comes first on ``sys.path``), so the code dvc.yaml lists as deps is the code that runs. Multi-process
training: ``torchrun --nproc_per_node 2 -m domainft.stages train``. A DomainftError (bad data,
params or model) is printed as one ``error:`` line with exit status 1; anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys

from domainft.errors import DomainftError
from domainft.stages import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m domainft.stages", description="Run one pipeline stage.")
    parser.add_argument("stage", help="a stage of domainft/pipeline.py (prepare, split, base, train, ...)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_stage(args.stage, args.params)
    except DomainftError as err:
        print(f"error: {args.stage}: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
