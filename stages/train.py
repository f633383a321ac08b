"""DVC entry point of the `train` stage: `python stages/train.py [params.yaml]` (see dvc.yaml).

The logic lives in domainft/stages/train.py so that `domainft train` runs the same code.
"""
from domainft.stages import main_for

if __name__ == "__main__":
    main_for("train")
