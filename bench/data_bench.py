"""Data benchmark: prepare + split over a generated 200k-record corpus, vs a plain datasketch baseline.

    .venv/bin/python bench/data_bench.py                 # 200,000 records (the issue's size)
    .venv/bin/python bench/data_bench.py --records 20000 --baseline 5000

Corpus: a mix of schemas (alpaca JSONL 35%, ShareGPT JSON array 15%, OpenAI messages JSONL 15%,
FAQ CSV 20%, chat log CSV 15% with 2-4 turns per session), 10% Chinese, 5% near duplicates (an
earlier record with one word changed), 1% placeholder inputs, 0.2% malformed JSON lines, a few
emails/phone numbers. It runs the real stages (``domainft.stages.prepare.run`` and
``domainft.stages.split.run``, outputs written) in a temporary folder and reports end-to-end
records/s, CPU seconds (worker processes included) and peak RSS: the main process, the largest
other process (prepare's workers, split's second process) and the peak of all of them together
(sampled every 50 ms with psutil). The baseline is plain
datasketch: ``MinHash(num_perm=128)`` updated with every character 5-gram of the same normalised
texts plus ``MinHashLSH(threshold=0.8)`` insert and
query, timed on ``--baseline`` records and reported in records/s; the ratio compares the whole
prepare+split pipeline (and its MinHash part alone) with that baseline.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_SYL = ("ba", "ke", "lo", "mi", "nu", "ra", "si", "to", "ve", "zu", "pra", "gle", "dro", "fli", "sta", "cor",
        "an", "er", "ing", "on", "ate", "ive", "al", "ous", "ly", "ment", "tion", "ex", "un", "re")
EN = [a + b + c for a in _SYL for b in _SYL for c in _SYL]  # 27,000 pseudo-words
random.Random(0).shuffle(EN)
ZH = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 2000))  # 2,000 common-range CJK characters


_CUM = list(itertools.accumulate(1 / (i + 1) ** 0.8 for i in range(len(EN))))  # Zipf-like frequencies


def _en(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(EN, cum_weights=_CUM, k=n)).capitalize() + "."


def _zh(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(ZH, k=n)) + "。"


def _text(rng, zh, n):
    return _zh(rng, n * 2) if zh else _en(rng, n)


def generate(raw: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` raw records under ``raw`` (see module docstring); returns n."""
    rng = random.Random(seed)
    raw.mkdir(parents=True, exist_ok=True)
    pairs: list[tuple[str, str]] = []

    def qa_pair():
        if pairs and rng.random() < 0.05:  # near duplicate of an earlier record
            q, a = rng.choice(pairs)
            if " " in a:  # change one word
                words = a.split(" ")
                words[rng.randrange(len(words))] = rng.choice(EN)
                return q, " ".join(words)
            k = rng.randrange(len(a) - 1)  # Chinese: change one character
            return q, a[:k] + rng.choice(ZH) + a[k + 1:]
        zh = rng.random() < 0.10
        q, a = _text(rng, zh, rng.randint(6, 14)) , _text(rng, zh, rng.randint(20, 60))
        if rng.random() < 0.01:
            a += f" Write to help{rng.randint(1, 999)}@example.com or call +44 20 7946 {rng.randint(1000, 9999)}."
        pairs.append((q, a))
        return q, a

    counts = {"alpaca": int(n * 0.35), "sharegpt": int(n * 0.15), "messages": int(n * 0.15), "faq": int(n * 0.20)}
    counts["chat"] = n - sum(counts.values())
    with (raw / "alpaca.jsonl").open("w", encoding="utf-8") as f:
        for i in range(counts["alpaca"]):
            if rng.random() < 0.002:
                f.write('{"instruction": "truncated\n')
                continue
            q, a = qa_pair()
            inp = "<noinput>" if rng.random() < 0.01 else ""
            f.write(json.dumps({"instruction": q, "input": inp, "output": a}, ensure_ascii=False) + "\n")
    convs = []
    for _ in range(counts["sharegpt"]):
        q, a = qa_pair()
        convs.append({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
    (raw / "sharegpt.json").write_text(json.dumps(convs, ensure_ascii=False), encoding="utf-8")
    with (raw / "messages.jsonl").open("w", encoding="utf-8") as f:
        for _ in range(counts["messages"]):
            q, a = qa_pair()
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
                               ensure_ascii=False) + "\n")
    with (raw / "faq.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer", "category"])
        for _ in range(counts["faq"]):
            q, a = qa_pair()
            w.writerow([q, a, rng.choice(["cards", "loans", "savings"])])
    with (raw / "chats.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["session_id", "role", "text", "timestamp"])
        for s in range(counts["chat"]):
            for t in range(rng.randint(1, 2)):
                q, a = qa_pair()
                w.writerow([f"S{s}", "customer", q, f"2024-01-01T10:{t * 2:02d}:00"])
                w.writerow([f"S{s}", "agent", a, f"2024-01-01T10:{t * 2 + 1:02d}:00"])
    return n


def baseline_datasketch(texts: list[str], ngram: int = 5, num_perm: int = 128, threshold: float = 0.8) -> float:
    """records/s of plain datasketch MinHash (per-shingle update) + MinHashLSH insert/query."""
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    for i, t in enumerate(texts):
        m = MinHash(num_perm=num_perm)
        for j in range(max(1, len(t) - ngram + 1)):
            m.update(t[j:j + ngram].encode("utf-8"))
        lsh.query(m)
        lsh.insert(str(i), m)
    return len(texts) / (time.perf_counter() - t0)


class ProcessTreeSampler:
    """Samples this process and its descendants (prepare's fork server and workers, split's second
    process) every ``interval`` s with psutil: CPU seconds of every process seen (its last sample;
    descendants started after the first sample count in full), each one's peak RSS and the peak of
    their summed RSS. RUSAGE_CHILDREN would miss the workers: they are children of the fork server.
    """

    def __init__(self, interval: float = 0.05):
        import threading

        import psutil

        self.me, self.interval = psutil.Process(), interval
        self.cpu: dict[int, float] = {}
        self.rss: dict[int, int] = {}
        self.peak_total_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        total = 0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                with p.oneshot():
                    t, rss = p.cpu_times(), p.memory_info().rss
            except psutil.Error:
                continue
            self.cpu[p.pid] = t.user + t.system
            self.rss[p.pid] = max(self.rss.get(p.pid, 0), rss)
            total += rss
        self.peak_total_rss = max(self.peak_total_rss, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "ProcessTreeSampler":
        self._sample()
        self.cpu0 = dict(self.cpu)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def cpu_seconds(self) -> float:
        return sum(v - self.cpu0.get(pid, 0.0) for pid, v in self.cpu.items())

    def peak_descendant_rss_mib(self) -> float:
        return max((v for pid, v in self.rss.items() if pid != self.me.pid), default=0) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--baseline", type=int, default=10_000, help="records timed for the datasketch baseline")
    ap.add_argument("--workers", type=int, default=0, help="prepare.workers (0 = one per CPU core, 1 = serial)")
    args = ap.parse_args()

    from domainft.config import parse_params
    from domainft.data import dedup
    from domainft.data.prepare import read_records
    from domainft.data.records import content_key
    from domainft.stages import prepare as prepare_stage
    from domainft.stages import split as split_stage

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        generate(root / "data" / "raw", args.records)
        gen_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in (root / "data" / "raw").iterdir()) / 2**20
        os.chdir(root)
        params = parse_params({"prepare": {"workers": args.workers}})
        with ProcessTreeSampler() as tree:
            t0 = time.perf_counter()
            pm = prepare_stage.run(params)
            t1 = time.perf_counter()
            sm = split_stage.run(params)
            t2 = time.perf_counter()
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        records = read_records("data/processed/records.jsonl")
        texts = [content_key(r.messages) for r in records]
        t3 = time.perf_counter()
        sig = dedup.signatures(texts, 128, 5)
        dedup.similar_pairs(sig, 0.7)
        ours_mh = len(texts) / (time.perf_counter() - t3)
        base = baseline_datasketch(texts[: args.baseline])
    read = pm["totals"]["read"]
    e2e = read / (t2 - t0)
    result = {
        "records": read, "raw_mib": round(size_mb, 1), "generate_s": round(gen_s, 1),
        "prepare_s": round(t1 - t0, 2), "split_s": round(t2 - t1, 2), "records_per_s": round(e2e),
        "cpu_s": round(tree.cpu_seconds(), 2), "records_per_cpu_s": round(read / tree.cpu_seconds()),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "peak_rss_mib": round(peak_mib), "workers": pm.get("workers", 1),
        "largest_other_process_peak_rss_mib": round(tree.peak_descendant_rss_mib()),
        "peak_rss_all_processes_mib": round(tree.peak_total_rss / 2**20),
        "kept": pm["totals"]["kept"],
        "rejected_by_reason": pm["totals"]["rejected_by_reason"], "split_sizes": sm["sizes"],
        "leakage_total": sm["leakage"]["total"],
        "ours_minhash_lsh_records_per_s": round(ours_mh), "datasketch_records_per_s": round(base),
        "ratio_pipeline_vs_datasketch": round(e2e / base, 1), "ratio_minhash_vs_datasketch": round(ours_mh / base, 1),
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
