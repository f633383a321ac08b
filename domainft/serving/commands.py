"""CLI adapters: ``domainft serve`` and ``domainft export vllm`` (heavy imports happen inside)."""
from __future__ import annotations

import json
from pathlib import Path

import click


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
@click.pass_context
def serve(ctx: click.Context, model, adapter_args, host, port, params_path) -> None:
    """Serve the model with an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health)."""
    import uvicorn

    from domainft.serving.app import build_app
    from domainft.serving.http import uvicorn_config
    from domainft.serving.loader import ModelLoadError, parse_adapter_args

    explicit = ctx.get_parameter_source("params_path") != click.core.ParameterSource.DEFAULT
    params = _params(params_path, explicit)
    set_torch_threads(params.serve.torch_threads)
    try:
        adapter, named = parse_adapter_args(adapter_args)
        app = build_app(params, model, adapter, named or None)
    except (ModelLoadError, ValueError) as err:
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
