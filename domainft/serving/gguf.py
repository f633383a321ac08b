"""``domainft export gguf``: the merged model as GGUF files for llama.cpp and Ollama, checked against it.

Every step uses llama.cpp's own, maintained tools, at the version of the installed
llama-cpp-python (:data:`LLAMA_CPP_PYTHON_VERSION`), never a home-made format writer:

1. **convert**: ``convert_hf_to_gguf.py`` with its ``conversion`` package and ``gguf-py``, taken from
   the llama-cpp-python sdist (``vendor/llama.cpp``; :func:`install_converter` unpacks them into
   ``<venv>/share/llama.cpp``, ``make install`` does it) writes ``model-f16.gguf`` (or bf16) from the
   HF folder: weights, tokenizer (BPE merges, pre-tokenizer), special token ids and the folder's
   chat template (``chat_template.jinja``);
2. **metadata**: gguf-py's ``gguf_new_metadata`` sets ``tokenizer.ggml.eot_token_id`` to the template's
   end-of-turn token (``<|im_end|>`` for ChatML), so llama.cpp and Ollama stop at the end of the turn
   as ``domainft serve`` does, and (re)sets ``tokenizer.chat_template`` to the folder's template;
3. **quantize**: ``llama_cpp.llama_model_quantize`` (llama.cpp's ``llama-quantize``) from the f16 file
   to ``Q8_0`` and ``Q4_K_M`` (tensors whose rows are not a multiple of 256 get llama.cpp's own
   fallback type);
4. **fidelity**, like the merge stage's: on the first N fidelity conversations (the val split), the
   teacher-forced logits of every GGUF file in llama.cpp are compared with those of the merged folder
   in transformers (fp32): greedy (argmax) agreement over all positions and the per-token logit gap
   (max / mean |diff|); also greedy generation from each conversation's prompt, token by token. The
   figures go to ``metrics/gguf.json`` and ``<out>/gguf.json`` (the manifest ``domainft serve`` reads);
   the f16 file must reach ``min_greedy_agreement`` (default 0.95), quantized files are reported;
5. **Ollama**: ``<out>/Modelfile`` (``ollama create <name> -f Modelfile``) with the same chat template
   as a Go template (derived from the Jinja template and checked against it on probe conversations),
   the end-of-turn stop tokens and the domain's system prompt.

Notation: N prompts, T tokens, V vocabulary size.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from domainft.errors import DomainftError

log = logging.getLogger(__name__)

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the llama-cpp-python release whose llama.cpp converts and runs the files
CONVERTER_ENV = "DOMAINFT_LLAMA_CPP_DIR"  # a folder with convert_hf_to_gguf.py, conversion/ and gguf-py/
OUTTYPES = ("f16", "bf16")
# llama.cpp's llama_ftype values (include/llama.h), the ones `llama-quantize` names Q8_0 and Q4_K_M
QUANT_FTYPES = {"q8_0": 7, "q4_k_m": 15}
MANIFEST = "gguf.json"
STEM = "model"


class GgufExportError(DomainftError, RuntimeError):
    """The GGUF export cannot run or its files do not answer like the merged model."""


@functools.lru_cache(maxsize=1)
def _probe_cpu(code: str = "import llama_cpp; llama_cpp.llama_print_system_info()") -> str:
    """"" when llama.cpp's CPU backend runs here, else how its probe process died: a build for
    instructions this CPU lacks dies of SIGILL at its first use, which no ``except`` can catch, so the
    probe (``llama_print_system_info``, which touches the backend) runs in a child process, once."""
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "probe did not finish in 120 s"
    if r.returncode == 0:
        return ""
    return f"probe exit {r.returncode}" + (" (SIGILL: illegal instruction)" if r.returncode in (-4, 132) else "")


def llama_cpp_status() -> tuple[bool, str]:
    """(importable, reason): whether ``llama_cpp`` loads here, and why not (for skips and errors)."""
    try:
        import llama_cpp  # noqa: F401
    except Exception as err:  # ImportError, or OSError from a library built for another CPU
        return False, (f"llama-cpp-python is not importable ({type(err).__name__}: {err}); install it with "
                       f"make llamacpp (llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}, built for this CPU)")
    import llama_cpp

    ran = _probe_cpu()
    if ran:
        return False, (f"llama-cpp-python's library does not run on this CPU ({ran}): it was built for "
                       f"instructions this CPU lacks (e.g. AVX-512 on an AVX2-only host, or a wheel cached "
                       f"from another machine); rebuild it here: make llamacpp LLAMA_REBUILD=1")
    if llama_cpp.__version__ != LLAMA_CPP_PYTHON_VERSION:
        return False, (f"llama-cpp-python {llama_cpp.__version__} is installed; domainft is tested with "
                       f"{LLAMA_CPP_PYTHON_VERSION} (pip install llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION})")
    return True, ""


def default_converter_dir() -> Path:
    return Path(sys.prefix) / "share" / "llama.cpp"


def find_converter(explicit: str | Path | None = None) -> Path:
    """The folder holding llama.cpp's ``convert_hf_to_gguf.py`` (+ ``conversion/``, ``gguf-py/``).

    Looked up in ``explicit``, ``$DOMAINFT_LLAMA_CPP_DIR``, then ``<venv>/share/llama.cpp``.

    Raises:
        GgufExportError: none has the converter.
    """
    for cand in (explicit, os.environ.get(CONVERTER_ENV), default_converter_dir()):
        if cand and (Path(cand) / "convert_hf_to_gguf.py").is_file() and (Path(cand) / "gguf-py").is_dir():
            return Path(cand)
    raise GgufExportError(
        f"llama.cpp's convert_hf_to_gguf.py not found (looked in {CONVERTER_ENV} and {default_converter_dir()}); "
        f"run `python -m domainft.serving.gguf install-converter` (make install does) to unpack it from the "
        f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist")


def install_converter(dest: str | Path | None = None, sdist: str | Path | None = None,
                      version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """Unpack llama.cpp's converter from the llama-cpp-python sdist into ``dest``.

    The sdist is ``sdist`` when given, else ``pip download``-ed (pip's cache makes a second call
    offline). Copies ``convert_hf_to_gguf.py``, ``conversion/``, ``gguf-py/`` and the LICENSE, and
    records the version in ``VERSION``.
    """
    dest = Path(dest or default_converter_dir())
    with tempfile.TemporaryDirectory() as tmp:
        if sdist is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={version}", "-d", tmp], check=True)
            sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        wanted = ("convert_hf_to_gguf.py", "LICENSE", "conversion/", "gguf-py/")
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and m.name[len(prefix):].startswith(wanted) and (m.isfile() or m.isdir())]
            if not any(m.name.endswith("convert_hf_to_gguf.py") for m in members):
                raise GgufExportError(f"{sdist} has no {prefix}convert_hf_to_gguf.py")
            tar.extractall(tmp, members=members, filter="data")
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(tmp) / prefix, partial)
        (partial / "VERSION").write_text(version + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)
    return dest


def _run(cmd: list[str], what: str, env: dict | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise GgufExportError(f"{what} failed (exit {proc.returncode}): {tail}")


def _tool_env(converter: Path) -> dict:
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the converter then uses its own gguf-py, the one of its llama.cpp
    env["PYTHONPATH"] = str(converter / "gguf-py") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def convert(model: Path, out_file: Path, outtype: str, converter: Path, eot_id: int, template: str) -> None:
    """HF folder -> GGUF with llama.cpp's converter, then the end-of-turn id and template set."""
    raw = out_file.with_name(out_file.name + ".convert.tmp")
    env = _tool_env(converter)
    _run([sys.executable, str(converter / "convert_hf_to_gguf.py"), str(model), "--outtype", outtype,
          "--outfile", str(raw)], "convert_hf_to_gguf.py", env)
    with tempfile.TemporaryDirectory() as tmp:
        tpl = Path(tmp) / "chat_template.jinja"
        tpl.write_text(template, encoding="utf-8")
        _run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(raw), str(out_file) + ".tmp",
              "--special-token-by-id", "eot", str(eot_id), "--chat-template-file", str(tpl), "--force"],
             "gguf_new_metadata", env)
    raw.unlink()
    os.replace(str(out_file) + ".tmp", out_file)


def quantize(src: Path, dst: Path, quant: str, threads: int) -> None:
    """``src`` (f16/bf16 GGUF) -> ``dst`` at ``quant`` with llama.cpp's ``llama_model_quantize``."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[quant]
    params.nthread = threads
    tmp = dst.with_name(dst.name + ".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise GgufExportError(f"llama_model_quantize {src.name} -> {quant} failed (return code {rc})")
    os.replace(tmp, dst)


def weights_digest(folder: str | Path) -> str:
    """sha256 over config.json and the safetensors files of a model folder (what a GGUF was made from)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in [folder / "config.json", *sorted(folder.glob("*.safetensors"))]:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def gguf_metadata(path: str | Path) -> dict:
    """Key/value metadata of a GGUF file (gguf-py's reader; arrays other than short ones are left out)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.split(".")[-1] in ("tokens", "scores", "token_type", "merges"):
            continue
        try:
            out[key] = field.contents()
        except Exception:  # exotic types: skip
            continue
    return out


# ----------------------------------------------------------------------------------- llama.cpp side
def load_llama(path: str | Path, n_ctx: int, threads: int, logits_all: bool = False):
    """A ``llama_cpp.Llama`` on ``path`` (quiet; the whole prompt in one batch up to 512)."""
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_ubatch=min(n_ctx, 512),
                 n_threads=threads, n_threads_batch=threads, logits_all=logits_all, verbose=False)


def llama_logits(llm, prompt: list[int]):
    """(T, V) float32 numpy logits of ``prompt`` (teacher-forced, one forward over the prompt)."""
    import numpy as np

    llm.reset()
    llm.eval(prompt)
    return np.array(llm.scores[:len(prompt)], dtype=np.float32)


def llama_greedy(llm, prompt: list[int], max_new: int, eos_ids: set[int]) -> list[int]:
    """Greedy continuation of ``prompt`` in llama.cpp, ending at an eos id (included) or ``max_new``."""
    out = []
    llm.reset()
    for tid in llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0,
                            repeat_penalty=1.0, reset=True):
        out.append(int(tid))
        if tid in eos_ids or len(out) >= max_new:
            break
    return out


# ----------------------------------------------------------------------------------- fidelity
def fidelity_prompts(tokenizer, records: list[dict], n: int) -> tuple[list[list[int]], list[list[int]]]:
    """(whole conversations for teacher forcing, prompts up to the last assistant turn for generation)."""
    from domainft.merge import _prompt_ids
    from domainft.modeling.chat import encode_prompt

    full = _prompt_ids(tokenizer, records, n)
    gen = []
    for rec in records[:n]:
        msgs = rec["messages"]
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=len(msgs))
        gen.append(encode_prompt(tokenizer, msgs[:last])[:256])
    return full, gen


def _compare(ref, got) -> dict:
    """Logit gap and argmax agreement of lists of (T, V) arrays (torch reference vs llama.cpp)."""
    import numpy as np

    mx, total_abs, numel, agree, positions = 0.0, 0.0, 0, 0, 0
    for a, b in zip(ref, got):
        d = np.abs(a - b)
        mx = max(mx, float(d.max()))
        total_abs += float(d.sum(dtype=np.float64))
        numel += d.size
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        positions += a.shape[0]
    return {"max_abs_logit_diff": mx, "mean_abs_logit_diff": total_abs / max(numel, 1),
            "greedy_agreement": agree / max(positions, 1), "positions": positions}


def _generation_agreement(ref: list[list[int]], got: list[list[int]]) -> dict:
    """Token agreement of two greedy generations per prompt: the shared prefix over the reference length."""
    shared = 0
    for a, b in zip(ref, got):
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        shared += k
    total = sum(len(a) for a in ref)
    return {"generation_prefix_agreement": shared / max(total, 1),
            "generations_identical": sum(int(a == b) for a, b in zip(ref, got)), "generations": len(ref),
            "generated_tokens_reference": total}


def torch_reference(model_dir: Path, full: list[list[int]], gen: list[list[int]], eos_ids: list[int],
                    max_new: int) -> tuple[list, list[list[int]]]:
    """Teacher-forced logits (numpy) and greedy generations of the merged folder in transformers (fp32)."""
    import torch

    from domainft.merge import _logits
    from domainft.modeling.base import load_model

    model, _ = load_model(model_dir, device="cpu", dtype=torch.float32)
    logits = [x.numpy() for x in _logits(model, full)]
    outs = []
    with torch.no_grad():
        for p in gen:
            ids = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 do_sample=False, max_new_tokens=max_new, eos_token_id=list(eos_ids),
                                 pad_token_id=eos_ids[0])
            outs.append([int(t) for t in ids[0, len(p):]])
    del model
    return logits, outs


# ----------------------------------------------------------------------------------- Ollama
_MARK = {"system": "SYSMARK0", "user": "USERMARK1", "assistant": "ASSTMARK2", "user2": "USERMARK3"}


def _split_after(text: str, eot: str) -> tuple[str, str] | None:
    k = text.find(eot)
    if k < 0:
        return None
    j = k + len(eot)
    while j < len(text) and text[j] == "\n":
        j += 1
    return text[:j], text[j:]


def template_pieces(tokenizer) -> dict | None:
    """The chat template as literal pieces around each role's content, or None when it is not of that form.

    Rendered on probe conversations; a template is accepted only if rebuilding the probes from the
    pieces (:func:`render_pieces`) gives exactly what the Jinja template renders.
    """
    from domainft.modeling.chat import end_of_turn, render, supports_system_role

    if not supports_system_role(tokenizer):
        return None
    eot = end_of_turn(tokenizer)[0]
    m = _MARK
    convo = [{"role": "system", "content": m["system"]}, {"role": "user", "content": m["user"]},
             {"role": "assistant", "content": m["assistant"]}, {"role": "user", "content": m["user2"]}]
    text = render(tokenizer, convo, add_generation_prompt=True)
    try:
        idx = [text.index(m[k]) for k in ("system", "user", "assistant", "user2")]
    except ValueError:
        return None
    p0 = text[:idx[0]]
    gaps = [text[idx[i] + len(m[k]):idx[i + 1]] for i, k in enumerate(("system", "user", "assistant"))]
    m4 = text[idx[3] + len(m["user2"]):]
    parts = [_split_after(g, eot) for g in gaps]
    if None in parts:
        return None
    (sys_suffix, user_prefix), (user_suffix, asst_prefix), (asst_suffix, user_prefix2) = parts
    if user_prefix2 != user_prefix or not m4.startswith(user_suffix):
        return None
    pieces = {"system": (p0, sys_suffix), "user": (user_prefix, user_suffix),
              "assistant": (asst_prefix, asst_suffix), "generation": m4[len(user_suffix):], "default": ""}
    alone = render(tokenizer, [{"role": "user", "content": m["user"]}], add_generation_prompt=True)
    k = alone.find(user_prefix + m["user"])
    if k < 0:
        return None
    pieces["default"] = alone[:k]  # what the template puts before a conversation without a system turn
    probes = [convo, convo[1:], convo[:2], convo[1:3] + [{"role": "user", "content": m["user2"]}]]
    for probe in probes:
        if render_pieces(pieces, probe) != render(tokenizer, probe, add_generation_prompt=True):
            return None
    return pieces


def render_pieces(pieces: dict, messages: list[dict]) -> str:
    """What the Go template of :func:`ollama_template` renders for ``messages`` (its Python twin)."""
    out = pieces["default"] if messages and messages[0]["role"] != "system" else ""
    for msg in messages:
        pre, post = pieces[msg["role"]]
        out += pre + msg["content"] + post
    return out + pieces["generation"]


def ollama_template(pieces: dict) -> str:
    """An Ollama (Go text/template) TEMPLATE rendering ``.Messages`` as :func:`render_pieces` does."""
    def lit(s: str) -> str:
        return s.replace("{{", '{{ "{{" }}')

    head = f'{{{{- if ne (index .Messages 0).Role "system" }}}}{lit(pieces["default"])}{{{{ end }}}}' \
        if pieces["default"] else ""
    body = "{{ range .Messages }}"
    for i, role in enumerate(("system", "user", "assistant")):
        pre, post = pieces[role]
        body += f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{lit(pre)}{{{{ .Content }}}}{lit(post)}'
    return head + body + "{{ end }}{{ end }}" + lit(pieces["generation"])


def write_modelfile(path: Path, gguf_name: str, tokenizer, eos_ids: list[int], system_prompt: str,
                    defaults: dict) -> dict:
    """Write an Ollama Modelfile next to the GGUF; returns what it holds (for the manifest)."""
    pieces = template_pieces(tokenizer)
    stops = [tokenizer.convert_ids_to_tokens(i) for i in eos_ids]
    lines = [f"# Written by `domainft export gguf`. Use: ollama create <name> -f {path.name}", f"FROM ./{gguf_name}"]
    if pieces is not None:
        lines.append(f'TEMPLATE """{ollama_template(pieces)}"""')
    else:
        log.warning("the chat template is not expressible as literal pieces; the Modelfile leaves TEMPLATE to "
                    "Ollama's detection from the GGUF's tokenizer.chat_template")
    if system_prompt:
        lines.append(f'SYSTEM """{system_prompt}"""')
    lines += [f'PARAMETER stop "{s}"' for s in dict.fromkeys(stops)]
    lines += [f"PARAMETER {k} {v}" for k, v in defaults.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"path": str(path), "from": gguf_name, "template": pieces is not None, "stop": list(dict.fromkeys(stops)),
            "system": system_prompt}


# ----------------------------------------------------------------------------------- export
def export_gguf(model_dir: str | Path, out_dir: str | Path, records: list[dict], *, outtype: str = "f16",
                quants: tuple[str, ...] = ("q8_0", "q4_k_m"), n_prompts: int = 8, max_new_tokens: int = 32,
                min_greedy_agreement: float = 0.95, system_prompt: str = "", threads: int = 1,
                converter: str | Path | None = None) -> dict:
    """Export ``model_dir`` (HF folder) to GGUF files in ``out_dir`` and check them (module docstring).

    Args:
        records: fidelity conversations (``{"messages": [...]}``), the first ``n_prompts`` used.
        outtype: the unquantized file's type, ``f16`` or ``bf16``.
        quants: quantized types made from it (``q8_0``, ``q4_k_m``).
        max_new_tokens: greedy generation length per prompt for the generation comparison.
        min_greedy_agreement: the unquantized file's teacher-forced argmax agreement must reach this.
        system_prompt: the Modelfile's SYSTEM.
        threads: llama.cpp threads (quantization and evaluation).

    Returns:
        The manifest (also written to ``<out_dir>/gguf.json``): files, their fidelity figures,
        eos/eot ids, template hash, source digest, ``passed``.

    Raises:
        GgufExportError: missing tools or inputs, a failed conversion, or (after writing every file)
            the unquantized file below ``min_greedy_agreement``.
    """
    from transformers import AutoTokenizer

    from domainft.modeling.chat import ChatTemplateError, end_of_turn

    ok, why = llama_cpp_status()
    if not ok:
        raise GgufExportError(why)
    if outtype not in OUTTYPES:
        raise GgufExportError(f"outtype must be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    bad = [q for q in quants if q not in QUANT_FTYPES]
    if bad:
        raise GgufExportError(f"unknown quantization {', '.join(bad)}; choose from {', '.join(QUANT_FTYPES)}")
    model_dir, out = Path(model_dir), Path(out_dir)
    for f in ("config.json", "generation_config.json", "tokenizer.json"):
        if not (model_dir / f).is_file():
            raise GgufExportError(f"{model_dir / f} not found; export gguf needs a merged model folder (models/merged)")
    if not records:
        raise GgufExportError("no fidelity conversations (data/splits/val.jsonl is empty or missing)")
    conv = find_converter(converter)
    tok = AutoTokenizer.from_pretrained(model_dir)
    try:
        eot, eot_id = end_of_turn(tok)
    except ChatTemplateError as err:
        raise GgufExportError(f"{model_dir}: {err}") from None
    gen_cfg = json.loads((model_dir / "generation_config.json").read_text())
    eos = gen_cfg.get("eos_token_id")
    eos_ids = list(dict.fromkeys(([eos] if isinstance(eos, int) else list(eos or [])) + [eot_id]))
    template = tok.chat_template
    out.mkdir(parents=True, exist_ok=True)

    files = {outtype: out / f"{STEM}-{outtype}.gguf"}
    log.info("converting %s -> %s with %s", model_dir, files[outtype], conv / "convert_hf_to_gguf.py")
    convert(model_dir, files[outtype], outtype, conv, eot_id, template)
    for q in quants:
        files[q] = out / f"{STEM}-{q}.gguf"
        log.info("quantizing -> %s", files[q])
        quantize(files[outtype], files[q], q, threads)

    full, gen = fidelity_prompts(tok, records, n_prompts)
    log.info("fidelity: %d conversations (%d positions), transformers fp32 reference", len(full), sum(map(len, full)))
    ref_logits, ref_gen = torch_reference(model_dir, full, gen, eos_ids, max_new_tokens)
    n_ctx = max(max(map(len, full)), max(map(len, gen)) + max_new_tokens) + 8
    report = {}
    for kind, path in files.items():
        llm = load_llama(path, n_ctx, threads, logits_all=True)
        got = [llama_logits(llm, p) for p in full]
        outs = [llama_greedy(llm, p, max_new_tokens, set(eos_ids)) for p in gen]
        meta_eot = llm.metadata.get("tokenizer.ggml.eot_token_id")
        report[kind] = {"path": str(path), "bytes": path.stat().st_size, **_compare(ref_logits, got),
                        **_generation_agreement(ref_gen, outs), "eot_token_id": None if meta_eot is None else int(meta_eot),
                        "chat_template_embedded": llm.metadata.get("tokenizer.chat_template") == template}
        del llm, got
        log.info("%s: greedy agreement %.4f, max |logit diff| %.4f, generations identical %d/%d", kind,
                 report[kind]["greedy_agreement"], report[kind]["max_abs_logit_diff"],
                 report[kind]["generations_identical"], report[kind]["generations"])
    serve_kind = "q8_0" if "q8_0" in files else outtype
    defaults = {k: gen_cfg[k] for k in ("temperature", "top_p") if k in gen_cfg}
    modelfile = write_modelfile(out / "Modelfile", files[serve_kind].name, tok, eos_ids, system_prompt, defaults)
    import llama_cpp

    head = report[outtype]
    manifest = {
        "source": {"model_dir": str(model_dir.resolve()), "weights_sha256": weights_digest(model_dir)},
        "llama_cpp_python": llama_cpp.__version__, "converter": str(conv), "outtype": outtype,
        "files": report, "serve_file": files[serve_kind].name,
        "eos_token_ids": eos_ids, "eot_token": eot, "eot_token_id": eot_id,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "prompts": len(full), "max_new_tokens": max_new_tokens, "modelfile": modelfile,
        "min_greedy_agreement_threshold": min_greedy_agreement,
        "passed": (head["greedy_agreement"] >= min_greedy_agreement and head["eot_token_id"] == eot_id
                   and head["chat_template_embedded"]),
    }
    (out / (MANIFEST + ".tmp")).write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(out / (MANIFEST + ".tmp"), out / MANIFEST)
    return manifest


def find_gguf(model_dir: str | Path, gguf_dir: str | Path | None = None, check_source: bool = True
              ) -> tuple[Path | None, dict | None, str]:
    """The GGUF exported from ``model_dir`` (``<model_dir>/../gguf`` unless ``gguf_dir``), for serving.

    Returns:
        (file or None, manifest or None, why not): the manifest's ``serve_file``, when the manifest
        exists, its export passed and (``check_source``) the folder's weights are the ones exported.
    """
    where = Path(gguf_dir) if gguf_dir else Path(model_dir).parent / "gguf"
    mf = where / MANIFEST
    if not mf.is_file():
        return None, None, f"no GGUF export at {where} (run `domainft export gguf`)"
    manifest = json.loads(mf.read_text())
    path = where / manifest.get("serve_file", "")
    if not path.is_file():
        return None, manifest, f"{path} is missing"
    if not manifest.get("passed"):
        return None, manifest, f"the GGUF export in {where} failed its fidelity check"
    if check_source and (Path(model_dir) / "config.json").is_file():
        if manifest.get("source", {}).get("weights_sha256") != weights_digest(model_dir):
            return None, manifest, f"{where} was exported from other weights than {model_dir} (re-run export gguf)"
    return path, manifest, ""

def fidelity_records(path: str | Path | None = None) -> list[dict]:
    """The conversations of the export's fidelity check: the JSONL file ``path``, else the first of
    data/splits/val.jsonl and data/splits/train.jsonl that exists and holds a record.

    Raises:
        GgufExportError: none of those files exists or holds a record.
    """
    from domainft.atomic import read_jsonl

    cands = [Path(path)] if path else [Path("data/splits/val.jsonl"), Path("data/splits/train.jsonl")]
    for c in cands:
        if c.is_file():
            records = read_jsonl(c)
            if records:
                return records
    raise GgufExportError(f"no fidelity conversations in {', '.join(map(str, cands))}; run `dvc repro split` "
                          "or give --prompts FILE.jsonl")



def main(argv: list[str] | None = None) -> int:
    """``python -m domainft.serving.gguf install-converter [--dest DIR] [--sdist FILE]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m domainft.serving.gguf")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ic = sub.add_parser("install-converter", help="unpack llama.cpp's convert_hf_to_gguf.py from the sdist")
    ic.add_argument("--dest", default=None)
    ic.add_argument("--sdist", default=None)
    args = ap.parse_args(argv)
    try:
        print(install_converter(args.dest, args.sdist))
    except (GgufExportError, subprocess.CalledProcessError, StopIteration) as err:
        print(f"error: cannot install llama.cpp's converter: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
