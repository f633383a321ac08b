"""The ``domainft`` command line: every pipeline stage plus serving, promotion and review.

Commands are thin adapters over the library; pipeline stages read params.yaml like ``dvc repro``::

    domainft prepare --params params.yaml
    domainft train
    domainft serve --model models/merged
"""
from __future__ import annotations

import json
import logging

import click

from domainft.errors import DomainftError
from domainft.pipeline import STAGE_NAMES


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
        from domainft.stages import run_stage

        try:
            result = run_stage(name, params_path)
        except DomainftError as err:  # bad data, params or model: the message says what to fix
            raise click.ClickException(str(err)) from None
        click.echo(json.dumps(result, indent=2, default=str))

    return command


for _name in STAGE_NAMES:
    cli.add_command(_stage_command(_name))


@cli.command()
@click.option("--metrics", "metrics_path", default="metrics/eval.json", show_default=True, type=click.Path())
def compare(metrics_path: str) -> None:
    """Print the base-vs-tuned table from metrics/eval.json (delta with its 95% bootstrap CI)."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    path = Path(metrics_path)
    if not path.exists():
        raise click.ClickException(f"{path} not found; run `dvc repro` first")
    m = json.loads(path.read_text())
    names = sorted({k.rsplit(".", 1)[0] for k in m if k.endswith(".tuned")})
    table = Table(title=f"base vs tuned on {m.get('n_samples', '?')} held-out samples ({path})")
    for col in ("metric", "base", "tuned", "delta", "95% CI of delta", "wins/ties/losses"):
        table.add_column(col, justify="left" if col == "metric" else "right")

    def f(x):
        return "-" if x is None else f"{x:.4g}"

    for n in names:
        ci = f"[{f(m.get(n + '.delta_ci_low'))}, {f(m.get(n + '.delta_ci_high'))}]"
        wtl = "/".join(str(m.get(f"{n}.{k}", "-")) for k in ("wins", "ties", "losses"))
        table.add_row(n, f(m.get(n + ".base")), f(m.get(n + ".tuned")), f(m.get(n + ".delta")), ci, wtl)
    Console(width=max(110, Console().width)).print(table)
    from domainft.evaluation.report import verdict_lines

    if "primary.name" in m:
        for line in verdict_lines(m):
            click.echo(line)
    if "judge" in m and isinstance(m["judge"], str):
        click.echo(f"judge: {m['judge']} {m.get('judge_reason', '')}".rstrip())


# --- extra commands (serve, export, promote, review, init) are registered below -------------
# (each helper adds one `cli.add_command(...)` line here, importing lazily inside its module)
from domainft.evaluation.review import review_cli  # noqa: E402  (stdlib + click only)

cli.add_command(review_cli)

from domainft.serving import commands as _serving  # noqa: E402  (click only; torch loads on use)

cli.add_command(_serving.serve)
cli.add_command(_serving.export)

from domainft.promote import promote_cli  # noqa: E402  (click only; mlflow loads on use)

cli.add_command(promote_cli)

from domainft.scenarios import init_cli  # noqa: E402  (click + yaml only)

cli.add_command(init_cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
