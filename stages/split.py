"""DVC entry point of the `split` stage: `python stages/split.py [params.yaml]` (see dvc.yaml).

The logic lives in domainft/stages/split.py so that `domainft split` runs the same code.
"""
from domainft.stages import main_for

if __name__ == "__main__":
    main_for("split")
