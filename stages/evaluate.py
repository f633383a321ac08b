"""DVC entry point of the `evaluate` stage: `python stages/evaluate.py [params.yaml]` (see dvc.yaml).

The logic lives in domainft/stages/evaluate.py so that `domainft evaluate` runs the same code. This
checkout's `domainft/` is put first on sys.path: the code DVC hashes as a dependency is the code
that runs, whatever copy of the package is installed.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domainft.stages import main_for  # noqa: E402

if __name__ == "__main__":
    main_for("evaluate")
