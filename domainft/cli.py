"""The ``domainft`` command line: every pipeline stage plus serving, export, promotion, review and init.

Commands are thin adapters over the library (heavy imports happen inside each command); pipeline
stages read params.yaml like ``dvc repro``::

    domainft prepare --params params.yaml
    domainft train
    domainft serve --model models/merged

Errors: a :class:`~domainft.errors.DomainftError` raised anywhere below a command (bad data,
params, model, registry state) is printed as one ``error: <message>`` line on stderr with exit
status 1 and no traceback, as ``python -m domainft.stages`` does; usage errors keep click's
``Usage: ... Error: ...`` form (exit 2); any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from domainft.errors import DomainftError
from domainft.pipeline import STAGE_NAMES
from domainft.scenarios import SCENARIOS


class CliError(click.ClickException):
    """A failure the user fixes: one ``error: <message>`` line on stderr, exit status 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=file is None)


class _Cli(click.Group):
    """The root group: turns a :class:`DomainftError` from any (sub)command into a :class:`CliError`."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DomainftError as err:
            raise CliError(str(err)) from None


@click.group(cls=_Cli)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """domainft: raw domain data -> fine-tuned, evaluated, registered, served LLM."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _explicit(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not left at its default)."""
    return ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT


def _params(path: str, explicit: bool):
    """params.yaml, or the defaults when the default file is absent (serving outside a checkout).

    Raises:
        ParamsError: the file is invalid, or ``--params`` names a file that does not exist.
    """
    from domainft.config import Params, load_params

    if not explicit and not Path(path).exists():
        return Params()
    return load_params(path)


# --- pipeline stages ---------------------------------------------------------------------------

def _stage_command(name: str) -> click.Command:
    @click.command(name=name, help=f"Run the `{name}` stage with params.yaml (as `dvc repro {name}` does, without DVC).")
    @click.option("--params", "params_path", default="params.yaml", show_default=True, type=click.Path())
    def command(params_path: str) -> None:
        from domainft.stages import run_stage

        result = run_stage(name, params_path)
        click.echo(json.dumps(result, indent=2, default=str))

    return command


for _name in STAGE_NAMES:
    cli.add_command(_stage_command(_name))


@cli.command()
@click.option("--metrics", "metrics_path", default="metrics/eval.json", show_default=True, type=click.Path())
def compare(metrics_path: str) -> None:
    """Print the base-vs-tuned table from metrics/eval.json (delta with its 95% bootstrap CI)."""
    from rich.console import Console
    from rich.table import Table

    from domainft.evaluation.report import verdict_lines

    path = Path(metrics_path)
    if not path.exists():
        raise CliError(f"{path} not found; run `dvc repro` first")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CliError(f"{path}: not JSON ({err})") from None
    names = sorted({k.rsplit(".", 1)[0] for k in m if k.endswith(".tuned")}) if isinstance(m, dict) else []
    if not names:
        raise CliError(f"{path}: no base-vs-tuned metric (<name>.base / <name>.tuned keys); give the evaluate "
                       "stage's metrics/eval.json")
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
    if "primary.name" in m:
        for line in verdict_lines(m):
            click.echo(line)
    if "judge" in m and isinstance(m["judge"], str):
        click.echo(f"judge: {m['judge']} {m.get('judge_reason', '')}".rstrip())


# --- serving and export ------------------------------------------------------------------------

@cli.command("serve")
@click.option("--model", default=None,
              help="Model folder, MLflow URI (models:/<name>@<alias>), or the base folder with --adapter. "
                   "Default: serve.model (models/merged).")
@click.option("--adapter", "adapter_args", multiple=True, metavar="[NAME=]PATH",
              help="LoRA adapter (peft folder or MLflow URI). One unnamed adapter is merged into --model; "
                   "named ones (repeatable, --adapter bank=models/adapter) are served side by side on the base, "
                   "each under its NAME, the base as <served id>-base. Default: serve.adapters.")
@click.option("--host", default=None, help="Bind address (default serve.host).")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port (default serve.port).")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              help="params.yaml whose `serve` section configures the server (defaults if absent).")
@click.option("--backend", type=click.Choice(["auto", "torch", "llamacpp"]), default="auto", show_default=True,
              help="Engine: llamacpp serves the GGUF of `domainft export gguf` (<model>/../gguf, or --gguf); torch "
                   "the HF folder; auto = llama.cpp on a CPU-only machine when that GGUF exists and matches the "
                   "model's weights, else torch.")
@click.option("--gguf", "gguf_path", default=None, type=click.Path(exists=True),
              help="GGUF file, or an export folder with gguf.json, for the llama.cpp backend.")
@click.pass_context
def serve(ctx: click.Context, model, adapter_args, host, port, params_path, backend, gguf_path) -> None:
    """Serve the model with an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health).

    Torch threads: serve.torch_threads, else OMP_NUM_THREADS, else all cores but one (left to the
    HTTP event loop and detokenization; :func:`domainft.hardware.thread_count`).
    """
    import uvicorn

    from domainft.hardware import apply_threads
    from domainft.serving.app import build_app
    from domainft.serving.http import uvicorn_config
    from domainft.serving.loader import parse_adapter_args

    params = _params(params_path, _explicit(ctx, "params_path"))
    threads = apply_threads(params.serve.torch_threads, reserve=1, keep_freed=False)
    try:
        adapter, named = parse_adapter_args(adapter_args)
        app = build_app(params, model, adapter, named or None, backend=backend, gguf=gguf_path, threads=threads)
    except (ValueError, OSError) as err:  # a model folder transformers cannot read (bad config.json): one line too
        raise CliError(str(err)) from None
    config = uvicorn_config(app, host or params.serve.host, params.serve.port if port is None else port, params.serve)
    uvicorn.Server(config).run()


@cli.group("export")
def export() -> None:
    """Export the model for other serving engines."""


@export.command("vllm")
@click.option("--model", default="models/merged", show_default=True, type=click.Path(file_okay=False),
              help="Merged model folder, or the base folder when --adapter is given.")
@click.option("--adapter", "adapter_args", multiple=True, metavar="[NAME=]PATH",
              help="LoRA adapter folder (vLLM --enable-lora): one unnamed, served as the served name, or named "
                   "ones (repeatable, --adapter bank=models/adapter), one LoRA module each. Default: serve.adapters.")
@click.option("--out", "out_dir", default=None, help="Output folder (default serve.vllm.out_dir = serving).")
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.pass_context
def export_vllm(ctx: click.Context, model, adapter_args, out_dir, params_path) -> None:
    """Write serving/docker-compose.yml (vLLM OpenAI server) and serving/README.md, then validate them."""
    from domainft.serving.export import validate_export, write_vllm_export
    from domainft.serving.loader import parse_adapter_args

    params = _params(params_path, _explicit(ctx, "params_path"))
    try:
        adapter, named = parse_adapter_args(adapter_args)
        if not adapter_args:
            named = dict(params.serve.adapters)
        info = write_vllm_export(params, model, adapter, out_dir, named or None)
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from None
    problems = validate_export(Path(info["compose"]).parent)
    if problems:
        raise CliError("export written but inconsistent:\n  " + "\n  ".join(problems))
    click.echo(json.dumps(info, indent=2))


@export.command("gguf")
@click.option("--model", default="models/merged", show_default=True, type=click.Path(file_okay=False),
              help="Merged model folder (HF safetensors, tokenizer, chat template, generation_config).")
@click.option("--out", "out_dir", default="models/gguf", show_default=True,
              help="Folder for model-<type>.gguf, gguf.json (manifest) and the Ollama Modelfile.")
@click.option("--outtype", type=click.Choice(["f16", "bf16"]), default="f16", show_default=True,
              help="Type of the unquantized file written by llama.cpp's convert_hf_to_gguf.py.")
@click.option("--quant", "quants", multiple=True, type=click.Choice(["q8_0", "q4_k_m"]),
              help="Quantized files made with llama.cpp's quantizer (repeatable; default q8_0 and q4_k_m).")
@click.option("--prompts", "prompts_path", default=None,
              help="JSONL conversations for the fidelity check (default data/splits/val.jsonl, else train).")
@click.option("--n-prompts", default=None, type=click.IntRange(1), help="Fidelity conversations (default merge.fidelity_prompts).")
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(1),
              help="Greedy generation length per prompt compared between llama.cpp and transformers.")
@click.option("--min-agreement", default=0.95, show_default=True, type=click.FloatRange(0, 1),
              help="The unquantized file's greedy (argmax) agreement with the merged model must reach this.")
@click.option("--metrics", "metrics_path", default="metrics/gguf.json", show_default=True)
@click.option("--converter", default=None, help="Folder with llama.cpp's convert_hf_to_gguf.py (default <venv>/share/llama.cpp).")
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.pass_context
def export_gguf(ctx: click.Context, model, out_dir, outtype, quants, prompts_path, n_prompts, max_new_tokens,
                min_agreement, metrics_path, converter, params_path) -> None:
    """GGUF files (llama.cpp's conversion and quantization) + Ollama Modelfile, checked against the merged model."""
    from domainft.hardware import thread_count
    from domainft.serving.gguf import export_gguf as run_export
    from domainft.serving.gguf import fidelity_records

    params = _params(params_path, _explicit(ctx, "params_path"))
    manifest = run_export(model, out_dir, fidelity_records(prompts_path), outtype=outtype,
                          quants=tuple(quants or ("q8_0", "q4_k_m")),
                          n_prompts=n_prompts or params.merge.fidelity_prompts, max_new_tokens=max_new_tokens,
                          min_greedy_agreement=min_agreement, system_prompt=params.domain.system_prompt,
                          threads=thread_count(reserve=1), converter=converter)
    metrics = Path(metrics_path)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(manifest, indent=2) + "\n")
    click.echo(json.dumps({k: manifest[k] for k in ("serve_file", "passed", "eos_token_ids", "eot_token_id")}
                          | {kind: {m: f[m] for m in ("greedy_agreement", "max_abs_logit_diff", "mean_abs_logit_diff",
                                                      "generation_prefix_agreement", "bytes")}
                             for kind, f in manifest["files"].items()}, indent=2))
    if not manifest["passed"]:
        head = manifest["files"][manifest["outtype"]]
        raise CliError(
            f"{manifest['outtype']} GGUF answers unlike {model}: greedy agreement {head['greedy_agreement']:.4f} < "
            f"{min_agreement} or the end-of-turn id / chat template is not embedded (files and {metrics} written)")


# --- registry ----------------------------------------------------------------------------------

@cli.command("promote")
@click.option("--params", "params_path", default="params.yaml", show_default=True, type=click.Path())
@click.option("--force", is_flag=True, help="Move @champion even if gates fail (needs --reason).")
@click.option("--reason", default=None, help="Why; recorded as the version tag domainft.promote.reason.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")
@click.option("--candidate", type=click.Choice(["auto", "sft", "dpo"]), default="auto", show_default=True,
              help="auto: the SFT+DPO version (@challenger-dpo) first when registered, then SFT (@challenger).")
def promote_cmd(params_path: str, force: bool, reason: str | None, as_json: bool, candidate: str) -> None:
    """Move @champion to @challenger when the gates in params `promote` pass (exit 1 when refused)."""
    from domainft.config import load_params
    from domainft.promote import print_result, promote

    if force and not (reason and reason.strip()):
        raise click.UsageError("--force requires --reason TEXT")
    result = promote(load_params(params_path), force=force, reason=reason, candidate=candidate)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_result(result)
    if result.decision == "refused":
        sys.exit(1)


# --- human review ------------------------------------------------------------------------------

@cli.group("review", help="Blind human review: in the browser (serve) or a rating sheet (export); import the verdicts.")
def review() -> None:
    pass


@review.command("export")
@click.option("--predictions", default="metrics/predictions.jsonl", show_default=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", default="review", show_default=True, type=click.Path())
@click.option("--seed", default=0, show_default=True, help="Seeds the per-item A/B order.")
@click.option("--max-items", default=0, show_default=True, help="0 = every prediction.")
def review_export(predictions: str, out_dir: str, seed: int, max_items: int) -> None:
    """Write sheet.csv, sheet.html (for raters) and key.json (keep it away from raters)."""
    from domainft.evaluation.review import export_review

    paths = export_review(predictions, out_dir, seed, max_items)
    click.echo("\n".join(f"{k}: {v}" for k, v in paths.items()))


@review.command("import")
@click.argument("ratings", nargs=-1, type=click.Path(exists=True))
@click.option("--db", default=None, type=click.Path(exists=True),
              help="Verdict store of `domainft review serve` (review/verdicts.db).")
@click.option("--key", "key_path", default="review/key.json", show_default=True, type=click.Path(exists=True))
@click.option("--predictions", default="metrics/predictions.jsonl", show_default=True, type=click.Path(exists=True))
@click.option("--out", "out_path", default="metrics/review.json", show_default=True, type=click.Path())
def review_import(ratings: tuple[str, ...], db: str | None, key_path: str, predictions: str, out_path: str) -> None:
    """Read rating CSVs (columns item, preference[, rater, comment]) and/or --db, write metrics/review.json."""
    from domainft.evaluation.review import import_review
    from domainft.stages import write_metrics

    if not ratings and db is None:
        raise CliError("give rating CSVs or --db review/verdicts.db")
    metrics = import_review(list(ratings), key_path, predictions, db)
    write_metrics("review", metrics, out_path)
    click.echo(json.dumps(metrics, indent=2))


@review.command("serve")
@click.option("--predictions", default="metrics/predictions.jsonl", show_default=True, type=click.Path(exists=True))
@click.option("--dir", "review_dir", default="review", show_default=True, type=click.Path(),
              help="key.json (written when absent, as by export) and verdicts.db live here.")
@click.option("--seed", default=0, show_default=True, help="Seeds the per-item A/B order (new key only).")
@click.option("--max-items", default=0, show_default=True, help="0 = every prediction (new key only).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True)
def review_serve(predictions: str, review_dir: str, seed: int, max_items: int, host: str, port: int) -> None:
    """Blind A/B review in the browser: keys A / B / T (tie), several raters, comments, resume."""
    from domainft.evaluation.review_app import serve as serve_review

    serve_review(predictions, review_dir, seed, max_items, host, port)


# --- project scaffolding -----------------------------------------------------------------------

@cli.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--scenario", required=True, type=click.Choice(SCENARIOS),
              help="Preset: system prompt, column mapping, PII rules, evaluation, CPU-sized train/eval.")
@click.option("--data", "data", multiple=True, type=click.Path(exists=True),
              help="Raw data file or folder copied into data/raw/ (repeatable).")
@click.option("--names-file", type=click.Path(exists=True, dir_okay=False),
              help="Names/terms to redact as [NAME], one per line (-> prepare.pii.names).")
@click.option("--base", "base_source", default=None,
              help="Override base.source: a model folder, gguf:<package or file>, or owner/name.")
def init(directory: str, scenario: str, data: tuple[str, ...], names_file: str | None,
         base_source: str | None) -> None:
    """Scaffold a pipeline project in DIRECTORY for one industry scenario.

    \b
    Scenarios:
      customer-service  FAQ tables / support logs (e.g. bank_faq.csv: Question, Answer)
      finance           filings Q&A grouped by company (e.g. financebench.jsonl)
      medical           de-identified record -> summary (columns record, summary); PII + names
      legal             Chinese legal consultation (e.g. lawbench: instruction, question, answer);
                        PII + names, character-level ROUGE-L / chrF
      legal-review      contract / ToS review, Yes or No (CUAD clauses + descriptions, CLAUDETTE)
    Then: cd DIRECTORY && dvc repro && domainft compare
    """
    from domainft.scenarios import init_project

    res = init_project(directory, scenario, list(data), names_file, base_source)
    p = res.params
    click.echo(f"scaffolded {res.path} for scenario {scenario!r}: base {p.base.source}, "
               f"{len(res.data_files)} raw file(s) in {p.prepare.raw_dir}, "
               f"PII names {len(p.prepare.pii.names)}, evaluate.language {p.evaluate.language}")
    for line in res.found:
        click.echo(f"  {line}")
    for line in res.warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"first commit {res.commit[:12] if res.commit else '-'}")
    click.echo(f"next: cd {res.path} && dvc repro && domainft compare")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
