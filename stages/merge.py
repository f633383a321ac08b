"""DVC entry point of the `merge` stage: `python stages/merge.py [params.yaml]` (see dvc.yaml).

The logic lives in domainft/stages/merge.py so that `domainft merge` runs the same code.
"""
from domainft.stages import main_for

if __name__ == "__main__":
    main_for("merge")
