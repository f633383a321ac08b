"""``domainft export vllm``: a docker-compose service running vLLM's OpenAI server on the pipeline's model.

Two layouts:

* merged (default): ``--model`` is the merged folder; vLLM serves it under the served model name;
* base + adapter: ``--model`` is the base folder, ``--adapter`` the LoRA folder; vLLM runs with
  ``--enable-lora --lora-modules <name>=<adapter>`` so clients ask for ``<name>`` and get the
  adapter (the base alone answers as ``<name>-base``);
* base + named adapters (``--adapter bank=<folder> --adapter legal=<folder>``, as ``domainft
  serve`` takes them): each is a LoRA module under its own name (``--lora-modules bank=...
  legal=...``, ``--max-loras`` = their number so one batch can hold all), the base is
  ``<name>-base``. vLLM applies one chat template to every module, so an adapter carrying a
  different template than the base is refused.

Either way the stored chat template (``--chat-template``) and generation config
(``--generation-config``: its eos ids, which include the end-of-turn token, stop generation) are
wired in, so vLLM and ``domainft serve`` build the same prompt ids and stop at the same tokens.
Flags follow the vLLM engine-argument reference (docs.vllm.ai, "Engine Arguments").

:func:`validate_export` re-reads the written compose file and checks what can be checked without
Docker or a GPU: it parses, every mounted host path exists, the referenced files are there, and
``--max-model-len`` / ``--max-lora-rank`` agree with config.json / adapter_config.json.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)  # values vLLM's --max-lora-rank accepts


def _mount(folder: Path, out_dir: Path, name: str) -> tuple[str, str]:
    host = os.path.relpath(folder.resolve(), out_dir.resolve())
    return f"{host}:/models/{name}:ro", f"/models/{name}"


def _template_of(folder: Path) -> str | None:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    cfg = folder / "tokenizer_config.json"
    t = json.loads(cfg.read_text()).get("chat_template") if cfg.is_file() else None
    return t if isinstance(t, str) else None


def write_vllm_export(params, model: str | Path, adapter: str | Path | None = None,
                      out_dir: str | Path | None = None, adapters: dict[str, str | Path] | None = None) -> dict:
    """Write ``<out_dir>/docker-compose.yml`` and ``<out_dir>/README.md``.

    Args:
        params: :class:`domainft.config.Params` (``serve``, ``serve.vllm``, ``domain``).
        model: merged model folder, or the base folder when ``adapter`` is given.
        adapter: LoRA adapter folder (``adapter_config.json``), served as the served name.
        out_dir: default ``serve.vllm.out_dir`` (``serving``).
        adapters: named LoRA adapter folders ``{name: folder}``, each a LoRA module under its name
            (exclusive with ``adapter``).

    Returns:
        Summary: paths written, served name, max_model_len, vLLM arguments.

    Raises:
        FileNotFoundError: the model folder lacks config.json / generation_config.json / a chat
            template, or the adapter folder lacks adapter_config.json.
        ValueError: the requested max_model_len exceeds the model's max_position_embeddings, an
            adapter rank exceeds every rank vLLM supports, an adapter carries a chat template other
            than the base's, or both ``adapter`` and ``adapters`` are given.
    """
    if adapter and adapters:
        raise ValueError("give one unnamed adapter or named adapters, not both")
    vp, sp = params.serve.vllm, params.serve
    out = Path(out_dir or vp.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(model)
    for f in ("config.json", "generation_config.json"):
        if not (model / f).is_file():
            raise FileNotFoundError(f"{model / f} not found; export needs a pipeline model folder")
    config = json.loads((model / "config.json").read_text())
    limit = int(config.get("max_position_embeddings") or 0)
    max_len = vp.max_model_len or sp.max_model_len or limit
    if limit and max_len > limit:
        raise ValueError(f"serve.vllm.max_model_len={max_len} exceeds max_position_embeddings={limit} in {model}/config.json")
    name = sp.model_name or f"domainft-{params.domain.name}"
    loras = {name: Path(adapter)} if adapter else {n: Path(a) for n, a in (adapters or {}).items()}
    vol, model_path = _mount(model, out, "base" if loras else "model")
    volumes = [vol]
    if (model / "chat_template.jinja").is_file():
        template = f"{model_path}/chat_template.jinja"
    else:  # template stored inside tokenizer_config.json: write it next to the compose file
        tok_cfg = json.loads((model / "tokenizer_config.json").read_text()) if (model / "tokenizer_config.json").is_file() else {}
        if not isinstance(tok_cfg.get("chat_template"), str):
            raise FileNotFoundError(f"{model} has no chat_template.jinja and no chat_template in tokenizer_config.json")
        (out / "chat_template.jinja").write_text(tok_cfg["chat_template"], encoding="utf-8")
        volumes.append("./chat_template.jinja:/templates/chat_template.jinja:ro")
        template = "/templates/chat_template.jinja"
    args = [f"--model={model_path}", f"--chat-template={template}", f"--generation-config={model_path}",
            f"--max-model-len={max_len}", f"--dtype={vp.dtype}",
            f"--gpu-memory-utilization={vp.gpu_memory_utilization}", f"--port={vp.port}"]
    if loras:
        ranks, modules = [], []
        for n, folder in loras.items():
            if not (folder / "adapter_config.json").is_file():
                raise FileNotFoundError(f"{folder / 'adapter_config.json'} not found; not a PEFT adapter folder")
            own = _template_of(folder)
            if own is not None and own != _template_of(model):
                raise ValueError(f"adapter {n} ({folder}) has its own chat template, unlike the base {model}; vLLM "
                                 "applies the base's to every LoRA module: export it merged instead")
            ranks.append(int(json.loads((folder / "adapter_config.json").read_text()).get("r", 8)))
            vol, adapter_path = _mount(folder, out, "adapter" if adapter else f"adapters/{n}")
            volumes.append(vol)
            modules.append(f"{n}={adapter_path}")
        max_rank = next((r for r in LORA_RANKS if r >= max(ranks)), None)
        if max_rank is None:
            raise ValueError(f"adapter rank {max(ranks)} exceeds vLLM's largest --max-lora-rank {LORA_RANKS[-1]}")
        args += [f"--served-model-name={name}-base", "--enable-lora", "--lora-modules", *modules,
                 f"--max-lora-rank={max_rank}", f"--max-loras={len(loras)}"]
    else:
        args.append(f"--served-model-name={name}")
    service = {"image": vp.image, "command": args, "volumes": volumes, "ports": [f"{vp.port}:{vp.port}"],
               "ipc": "host",
               "deploy": {"resources": {"reservations": {"devices": [
                   {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}}},
               "healthcheck": {"test": ["CMD", "python3", "-c",
                                        f"import urllib.request; urllib.request.urlopen('http://localhost:{vp.port}/health')"],
                               "interval": "30s", "timeout": "5s", "retries": 20}}
    if sp.api_key_env:  # vLLM reads VLLM_API_KEY; the value comes from the host env, never from a file
        service["environment"] = {"VLLM_API_KEY": f"${{{sp.api_key_env}:?set {sp.api_key_env}}}"}
    header = (f"# Written by `domainft export vllm` from {model}{''.join(' + ' + str(a) for a in loras.values())}.\n"
              "# Regenerate instead of editing: values come from params.yaml (serve, serve.vllm).\n")
    compose = out / "docker-compose.yml"
    compose.write_text(header + yaml.safe_dump({"services": {"vllm": service}}, sort_keys=False), encoding="utf-8")
    request_model = next(iter(loras)) if loras else name
    readme = out / "README.md"
    readme.write_text(_readme(name, request_model, vp.port, max_len, list(loras), sp.api_key_env), encoding="utf-8")
    return {"compose": str(compose), "readme": str(readme), "served_model_name": name,
            "max_model_len": max_len, "lora": bool(loras), "lora_modules": list(loras), "vllm_args": args}


def _readme(name: str, request_model: str, port: int, max_len: int, loras: list[str], key_env: str | None) -> str:
    lora = bool(loras)
    modules = ", ".join(f"`{n}`" for n in loras)
    auth = f' -H "Authorization: Bearer ${key_env}"' if key_env else ""
    return f"""# Serving `{name}` with vLLM

Written by `domainft export vllm`; regenerate it after `dvc repro` changes the model.

    docker compose -f serving/docker-compose.yml up -d      # needs an NVIDIA GPU + nvidia-container-toolkit
    curl http://localhost:{port}/v1/chat/completions -H "Content-Type: application/json"{auth} \\
      -d '{{"model": "{request_model}", "messages": [{{"role": "user", "content": "Hello"}}], "max_tokens": 64}}'

* {"Base model + LoRA adapters (`--enable-lora`); ask for " + modules + " to get a fine-tuned model, `" + name + "-base` for the base." if lora else "Serves the merged fine-tuned model."}
* The chat template stored with the model (`--chat-template`) and its `generation_config.json`
  (`--generation-config`, eos ids including the end-of-turn token) are the ones training,
  evaluation and `domainft serve` use, so prompts tokenize identically and generation stops at the
  end of the assistant turn.
* Context limit: `--max-model-len={max_len}` (prompt + completion tokens).
* {"API key: export `" + key_env + "` on the host; it reaches vLLM as `VLLM_API_KEY`." if key_env else "No API key (set `serve.api_key_env` in params.yaml and re-export to require one)."}
* Without a GPU, the same API is served on CPU by `domainft serve --model models/merged`.
"""


def _check_eos(model: Path) -> list[str]:
    """The end-of-turn token must be among generation_config's eos ids, or vLLM never stops."""
    if not (model / "generation_config.json").is_file() or not (model / "tokenizer_config.json").is_file():
        return []
    from transformers import AutoTokenizer

    from domainft.modeling.chat import ChatTemplateError, end_of_turn

    eos = json.loads((model / "generation_config.json").read_text()).get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    try:
        token, tid = end_of_turn(AutoTokenizer.from_pretrained(model))
    except ChatTemplateError as err:
        return [f"{model}: {err}"]
    return [] if tid in eos else [f"generation_config eos_token_id {eos} lacks end-of-turn {token!r} ({tid})"]


def validate_export(out_dir: str | Path) -> list[str]:
    """Problems found in ``<out_dir>/docker-compose.yml`` (empty list = consistent).

    Checks: YAML parses with a ``vllm`` service; every volume's host path exists; the model folder
    has config.json and generation_config.json; the chat template file exists; --max-model-len <=
    max_position_embeddings; with --enable-lora, the adapter has adapter_config.json and its rank
    <= --max-lora-rank; the published port matches --port.
    """
    out = Path(out_dir)
    try:
        spec = yaml.safe_load((out / "docker-compose.yml").read_text(encoding="utf-8"))
        service = spec["services"]["vllm"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        return [f"docker-compose.yml unreadable or without services.vllm: {err}"]
    problems, mounts = [], {}
    for vol in service.get("volumes", []):
        host, container = vol.split(":")[:2]
        mounts[container] = (out / host).resolve()
        if not mounts[container].exists():
            problems.append(f"volume host path {host} (-> {mounts[container]}) does not exist")

    def host_path(p: str) -> Path | None:
        for c, h in mounts.items():
            if p == c or p.startswith(c + "/"):
                return h / p[len(c):].lstrip("/")
        problems.append(f"{p} is not inside any mounted volume")
        return None

    args = parse_command(service["command"])
    model = host_path(str(args.get("model", "")))
    if model is not None:
        for f in ("config.json", "generation_config.json"):
            if not (model / f).is_file():
                problems.append(f"model folder {model} has no {f}")
        if (model / "config.json").is_file():
            limit = json.loads((model / "config.json").read_text()).get("max_position_embeddings")
            if limit and int(args.get("max-model-len", 0)) > int(limit):
                problems.append(f"--max-model-len {args['max-model-len']} > max_position_embeddings {limit}")
        problems += _check_eos(model)
    for key, must in (("chat-template", "file"), ("generation-config", "generation_config.json")):
        p = host_path(str(args.get(key, "")))
        if p is not None and not (p.is_file() if must == "file" else (p / must).is_file()):
            problems.append(f"--{key} {args.get(key)} -> {p} missing")
    if args.get("enable-lora"):
        modules = args.get("lora-modules") or []
        modules = [modules] if isinstance(modules, str) else modules
        if not modules:
            problems.append("--enable-lora without --lora-modules")
        if len(modules) > int(args.get("max-loras", 1)):
            problems.append(f"{len(modules)} --lora-modules but --max-loras {args.get('max-loras', 1)}")
        for module in modules:
            lora_name, _, lora_path = str(module).partition("=")
            adapter = host_path(lora_path)
            cfg = adapter / "adapter_config.json" if adapter else None
            if cfg is None or not cfg.is_file():
                problems.append(f"--lora-modules {lora_name} -> {adapter} has no adapter_config.json")
            elif int(json.loads(cfg.read_text()).get("r", 0)) > int(args.get("max-lora-rank", 16)):
                problems.append(f"adapter {lora_name} rank exceeds --max-lora-rank")
    if f"{args.get('port')}:{args.get('port')}" not in service.get("ports", []):
        problems.append(f"ports {service.get('ports')} do not publish --port {args.get('port')}")
    return problems


def parse_command(command: list[str]) -> dict:
    """vLLM arguments as a dict: ``--k=v`` -> ``{"k": "v"}``, a bare ``--flag`` -> True, and a flag
    followed by plain items (``--lora-modules a=/x b=/y``) -> the list of them."""
    args: dict = {}
    last = None
    for item in command:
        if item.startswith("--"):
            key, sep, value = item.removeprefix("--").partition("=")
            args[key], last = (value if sep else True), (None if sep else key)
        elif last is not None:
            args[last] = (args[last] if isinstance(args[last], list) else []) + [item]
    return args
