"""CLI adapters: ``domainft serve``, ``domainft export vllm`` and ``domainft export gguf`` (heavy imports inside)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from domainft.errors import DomainftError


def _params(path: str, explicit: bool):
    """params.yaml, or the defaults when the default file is absent (serving outside a checkout)."""
    from domainft.config import ParamsError, Params, load_params

    if not explicit and not Path(path).exists():
        return Params()
    try:
        return load_params(path)
    except ParamsError as err:
        raise click.ClickException(str(err)) from None


def set_torch_threads(requested: int) -> int:
    """Use ``requested`` torch threads, or all cores but one when 0.

    OpenMP threads that outnumber free cores stall at every barrier (measured on this project's
    2-core box under load: 2 threads ran decode steps 5-10x slower than 1), so one core is left
    to the HTTP event loop and detokenization.
    """
    import os

    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    torch.set_num_threads(requested or max(1, cores - 1))
    return torch.get_num_threads()


@click.command("serve")
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
    """Serve the model with an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health)."""
    import uvicorn

    from domainft.serving.app import build_app
    from domainft.serving.http import uvicorn_config
    from domainft.serving.loader import ModelLoadError, parse_adapter_args

    explicit = ctx.get_parameter_source("params_path") != click.core.ParameterSource.DEFAULT
    params = _params(params_path, explicit)
    threads = set_torch_threads(params.serve.torch_threads)
    try:
        adapter, named = parse_adapter_args(adapter_args)
        app = build_app(params, model, adapter, named or None, backend=backend, gguf=gguf_path, threads=threads)
    except (DomainftError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    config = uvicorn_config(app, host or params.serve.host, params.serve.port if port is None else port, params.serve)
    uvicorn.Server(config).run()


@click.group("export")
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
    from domainft.serving.loader import ModelLoadError, parse_adapter_args

    explicit = ctx.get_parameter_source("params_path") != click.core.ParameterSource.DEFAULT
    params = _params(params_path, explicit)
    try:
        adapter, named = parse_adapter_args(adapter_args)
        if not adapter_args:
            named = dict(params.serve.adapters)
        info = write_vllm_export(params, model, adapter, out_dir, named or None)
    except (FileNotFoundError, ValueError, ModelLoadError) as err:
        raise click.ClickException(str(err)) from None
    problems = validate_export(Path(info["compose"]).parent)
    if problems:
        raise click.ClickException("export written but inconsistent:\n  " + "\n  ".join(problems))
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
    import os

    from domainft.serving.gguf import export_gguf as run_export

    explicit = ctx.get_parameter_source("params_path") != click.core.ParameterSource.DEFAULT
    params = _params(params_path, explicit)
    try:
        records = _fidelity_records(prompts_path)
        threads = max(1, len(os.sched_getaffinity(0)) - 1) if hasattr(os, "sched_getaffinity") else 1
        manifest = run_export(model, out_dir, records, outtype=outtype, quants=tuple(quants or ("q8_0", "q4_k_m")),
                              n_prompts=n_prompts or params.merge.fidelity_prompts, max_new_tokens=max_new_tokens,
                              min_greedy_agreement=min_agreement, system_prompt=params.domain.system_prompt,
                              threads=threads, converter=converter)
    except DomainftError as err:
        raise click.ClickException(str(err)) from None
    metrics = Path(metrics_path)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(manifest, indent=2) + "\n")
    click.echo(json.dumps({k: manifest[k] for k in ("serve_file", "passed", "eos_token_ids", "eot_token_id")}
                          | {kind: {m: f[m] for m in ("greedy_agreement", "max_abs_logit_diff", "mean_abs_logit_diff",
                                                      "generation_prefix_agreement", "bytes")}
                             for kind, f in manifest["files"].items()}, indent=2))
    if not manifest["passed"]:
        head = manifest["files"][manifest["outtype"]]
        raise click.ClickException(
            f"{manifest['outtype']} GGUF answers unlike {model}: greedy agreement {head['greedy_agreement']:.4f} < "
            f"{min_agreement} or the end-of-turn id / chat template is not embedded (files and {metrics} written)")


def _fidelity_records(path: str | None) -> list[dict]:
    from domainft.serving.gguf import GgufExportError
    from domainft.atomic import read_jsonl

    cands = [Path(path)] if path else [Path("data/splits/val.jsonl"), Path("data/splits/train.jsonl")]
    for c in cands:
        if c.is_file():
            records = read_jsonl(c)
            if records:
                return records
    raise GgufExportError(f"no fidelity conversations in {', '.join(map(str, cands))}; run `dvc repro split` "
                          "or give --prompts FILE.jsonl")
