"""DVC entry point of the `base` stage: `python stages/base.py [params.yaml]` (see dvc.yaml).

The logic lives in domainft/stages/base.py so that `domainft base` runs the same code.
"""
from domainft.stages import main_for

if __name__ == "__main__":
    main_for("base")
