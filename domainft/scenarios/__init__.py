"""Industry scenarios and ``domainft init``: scaffold a ready-to-run project for one use case.

A scenario is a YAML file next to this module (``<name>.yaml``) with a ``description``, a
``data`` note (the raw format and column names it expects) and ``params``: a partial params.yaml
overlaid on the defaults of :mod:`domainft.config` (system prompt, column mapping, PII rules,
evaluation language, train/eval sizes that finish on a 2-core CPU).

    domainft init bank --scenario customer-service --data bank_faq.csv
    cd bank && dvc repro && domainft compare

The scaffolded folder is a git + DVC repository with params.yaml (defaults + preset, validated),
dvc.yaml (``domainft/templates/dvc.yaml``: one ``domainft <stage>`` command per stage), a
.gitignore, a README and data/raw with the given files under DVC (``dvc add data/raw``: raw data
that may still hold PII stays out of git history).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import click
import yaml

from domainft.config import Params, ParamsError, parse_params

SCENARIOS = ("customer-service", "finance", "medical", "legal")

GITIGNORE = """\
.venv/
__pycache__/
# MLflow local state
mlflow.db
mlruns/
mlartifacts/
# DVC outputs (cached by DVC, never by git)
/data/processed
/data/splits
/models/base
/models/adapter
/models/merged
/models/checkpoints
/metrics/predictions.jsonl
/metrics/report.html
/serving/
"""


class ScenarioError(ValueError):
    """Unknown scenario, bad names file or data path, or a target folder that is not empty."""


@dataclass(frozen=True)
class Scenario:
    """One preset: ``params`` is a partial params mapping (sections of :class:`domainft.config.Params`)."""

    name: str
    description: str
    data: str
    params: dict[str, Any]


@dataclass
class InitResult:
    path: Path
    scenario: str
    params: Params
    data_files: list[str] = field(default_factory=list)  # names under data/raw


def load_scenario(name: str) -> Scenario:
    """Read the preset ``domainft/scenarios/<name>.yaml`` (package data).

    Raises:
        ScenarioError: unknown name or a preset without a ``params`` mapping.
    """
    if name not in SCENARIOS:
        raise ScenarioError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    raw = yaml.safe_load(files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict):
        raise ScenarioError(f"scenario preset {name}.yaml has no `params` mapping")
    return Scenario(name, " ".join(str(raw.get("description", "")).split()),
                    " ".join(str(raw.get("data", "")).split()), raw["params"])


def deep_merge(base: dict, overlay: dict) -> dict:
    """A copy of ``base`` with ``overlay`` applied: nested mappings merge, anything else (lists too) is replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_names(path: str | Path) -> list[str]:
    """Names/terms for ``prepare.pii.names``: one per line (UTF-8, BOM allowed); blank lines and
    lines starting with ``#`` are skipped; duplicates dropped, order kept.

    Raises:
        ScenarioError: the file is missing, not UTF-8, or holds no name.
    """
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"names file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise ScenarioError(f"{path}: not UTF-8 (byte offset {err.start})") from None
    names = list(dict.fromkeys(s for s in (line.strip() for line in lines) if s and not s.startswith("#")))
    if not names:
        raise ScenarioError(f"names file {path} holds no names (one per line, # for comments)")
    return names


def scenario_params(name: str, names: list[str] | None = None, base_source: str | None = None) -> Params:
    """Defaults of :mod:`domainft.config` + the preset (+ PII names, + a base-model override), validated.

    Names turn PII redaction on (``prepare.pii.enabled``) and are added to the preset's list.

    Raises:
        ScenarioError: unknown scenario; ParamsError: the merged params are invalid (dotted key).
    """
    merged = deep_merge(Params().model_dump(mode="json"), load_scenario(name).params)
    if names:
        pii = merged["prepare"]["pii"]
        pii["enabled"] = True
        pii["names"] = list(dict.fromkeys(list(pii.get("names") or []) + list(names)))
    if base_source:
        merged["base"]["source"] = base_source
    return parse_params(merged, source=f"scenario {name}")


def render_params(scenario: Scenario, params: Params) -> str:
    """params.yaml text: a header naming the scenario, then every section (validated values)."""
    head = (f"# domainft params for the {scenario.name!r} scenario (domainft init --scenario {scenario.name}).\n"
            "# Defaults of domainft/config.py + the scenario preset; validated when loaded (a misspelled\n"
            "# key fails with its dotted name). Experiments: dvc exp run -S train.max_steps=300\n\n")
    return head + yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)


def _readme(scenario: Scenario, data_files: list[str]) -> str:
    listed = "\n".join(f"- `data/raw/{f}`" for f in data_files) or "- (none yet: copy your files into `data/raw/`)"
    return f"""# domainft project: {scenario.name}

{scenario.description}

Raw data: {scenario.data}

{listed}

```bash
dvc repro            # prepare -> split -> base -> train -> merge -> evaluate -> register
domainft compare     # base vs tuned on held-out questions, with 95% bootstrap intervals
```

Settings are in `params.yaml` (validated). New raw files go into `data/raw/`; `dvc repro` picks
them up and records them (`data/raw.dvc`). Rejected records and their reasons are in
`data/processed/rejects.jsonl`, counts in `metrics/prepare.json`.
"""


def _run(cmd: list[str], cwd: Path) -> None:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if p.returncode != 0:
        raise ScenarioError(f"`{' '.join(cmd)}` failed in {cwd} ({p.returncode}): {(p.stderr or p.stdout).strip()[-2000:]}")


def init_project(target: str | Path, scenario: str, data: list[str | Path] = (), names_file: str | Path | None = None,
                 base_source: str | None = None) -> InitResult:
    """Scaffold a project folder for ``scenario``; then ``cd target && dvc repro`` runs the pipeline.

    Writes params.yaml, dvc.yaml, .gitignore, README.md and data/raw/ (copies of ``data``: files
    or folders), runs ``git init``, ``dvc init`` (cache.type reflink,hardlink,copy; analytics off)
    and, when data was given, ``dvc add data/raw``. Nothing is committed.

    Args:
        target: new or empty folder.
        scenario: one of :data:`SCENARIOS`.
        data: raw data files or folders copied into data/raw/ (names kept).
        names_file: names/terms to redact (see :func:`read_names`) -> ``prepare.pii.names``.
        base_source: overrides ``base.source`` (a model folder, ``gguf:<package>``, a hub id).

    Raises:
        ScenarioError: unknown scenario, missing data/names file, two data files with one name,
            a non-empty target, or git/dvc failing; ParamsError: invalid merged params.
    """
    preset = load_scenario(scenario)
    names = read_names(names_file) if names_file else None
    params = scenario_params(scenario, names, base_source)
    sources = [Path(d) for d in data]
    for src in sources:
        if not src.exists():
            raise ScenarioError(f"data file not found: {src}")
    dup = {s.name for s in sources if [t.name for t in sources].count(s.name) > 1}
    if dup:
        raise ScenarioError(f"two data paths share the name {sorted(dup)[0]!r}; rename one")
    root = Path(target)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScenarioError(f"{root} exists and is not an empty folder")
    raw = root / params.prepare.raw_dir
    raw.mkdir(parents=True, exist_ok=True)
    for src in sources:
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, raw / src.name)
    (root / "params.yaml").write_text(render_params(preset, params), encoding="utf-8")
    template = files("domainft").joinpath("templates", "dvc.yaml").read_text(encoding="utf-8")
    (root / "dvc.yaml").write_text(template, encoding="utf-8")
    (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    (root / "README.md").write_text(_readme(preset, [s.name for s in sources]), encoding="utf-8")
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], root)
    _run(dvc + ["init", "-q"], root)
    _run(dvc + ["config", "cache.type", "reflink,hardlink,copy"], root)
    _run(dvc + ["config", "core.analytics", "false"], root)
    if sources:
        _run(dvc + ["add", "-q", str(Path(params.prepare.raw_dir))], root)
    return InitResult(root, scenario, params, [s.name for s in sources])


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--scenario", required=True, type=click.Choice(SCENARIOS),
              help="Preset: system prompt, column mapping, PII rules, evaluation, CPU-sized train/eval.")
@click.option("--data", "data", multiple=True, type=click.Path(exists=True),
              help="Raw data file or folder copied into data/raw/ (repeatable).")
@click.option("--names-file", type=click.Path(exists=True, dir_okay=False),
              help="Names/terms to redact as [NAME], one per line (-> prepare.pii.names).")
@click.option("--base", "base_source", default=None,
              help="Override base.source: a model folder, gguf:<package or file>, or owner/name.")
def init_cli(directory: str, scenario: str, data: tuple[str, ...], names_file: str | None,
             base_source: str | None) -> None:
    """Scaffold a pipeline project in DIRECTORY for one industry scenario.

    \b
    Scenarios:
      customer-service  FAQ tables / support logs (e.g. bank_faq.csv: Question, Answer)
      finance           filings Q&A grouped by company (e.g. financebench.jsonl)
      medical           de-identified record -> summary (columns record, summary); PII + names
      legal             Chinese legal consultation (e.g. lawbench: instruction, question, answer);
                        PII + names, character-level ROUGE-L / chrF
    Then: cd DIRECTORY && dvc repro && domainft compare
    """
    try:
        res = init_project(directory, scenario, list(data), names_file, base_source)
    except (ScenarioError, ParamsError) as err:
        raise click.ClickException(str(err)) from None
    p = res.params
    click.echo(f"scaffolded {res.path} for scenario {scenario!r}: base {p.base.source}, "
               f"{len(res.data_files)} raw file(s) in {p.prepare.raw_dir}, "
               f"PII names {len(p.prepare.pii.names)}, evaluate.language {p.evaluate.language}")
    click.echo(f"next: cd {res.path} && dvc repro && domainft compare")
