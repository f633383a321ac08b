"""DVC entry point of the `prepare` stage: `python stages/prepare.py [params.yaml]` (see dvc.yaml).

The logic lives in domainft/stages/prepare.py so that `domainft prepare` runs the same code.
"""
from domainft.stages import main_for

if __name__ == "__main__":
    main_for("prepare")
