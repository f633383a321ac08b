"""DVC entry point of the `register` stage: `python stages/register.py [params.yaml]` (see dvc.yaml).

The logic lives in domainft/stages/register.py so that `domainft register` runs the same code.
"""
from domainft.stages import main_for

if __name__ == "__main__":
    main_for("register")
