"""DVC entry point of the `evaluate` stage: `python stages/evaluate.py [params.yaml]` (see dvc.yaml).

The logic lives in domainft/stages/evaluate.py so that `domainft evaluate` runs the same code.
"""
from domainft.stages import main_for

if __name__ == "__main__":
    main_for("evaluate")
