"""The ``domainft`` command line: every pipeline stage plus serving, promotion and review.

Commands are thin adapters over the library; pipeline stages read params.yaml like ``dvc repro``::

    domainft prepare --params params.yaml
    domainft train
    domainft serve --model models/merged
"""
from __future__ import annotations

import importlib
import json
import logging

import click

from domainft.config import ParamsError, load_params

STAGES = ["prepare", "split", "base", "train", "merge", "evaluate", "register"]


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """domainft: raw domain data -> fine-tuned, evaluated, registered, served LLM."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _stage_command(name: str) -> click.Command:
    @click.command(name=name, help=f"Run the `{name}` stage with params.yaml (as `dvc repro {name}` does, without DVC).")
    @click.option("--params", "params_path", default="params.yaml", show_default=True, type=click.Path())
    def command(params_path: str) -> None:
        try:
            params = load_params(params_path)
        except ParamsError as err:
            raise click.ClickException(str(err)) from None
        module = importlib.import_module(f"domainft.stages.{name}")
        result = module.run(params)
        click.echo(json.dumps(result, indent=2, default=str))

    return command


for _name in STAGES:
    cli.add_command(_stage_command(_name))

# --- extra commands (serve, export, promote, review, init) are registered below -------------
# (each helper adds one `cli.add_command(...)` line here, importing lazily inside its module)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
