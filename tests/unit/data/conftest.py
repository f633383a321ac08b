"""A messy raw corpus with known defects, shared by the data tests.

Every raw record's fate is listed in :data:`EXPECTED` so tests assert exact accounting.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

VOCAB = [a + b for a in ("ba", "ke", "lo", "mi", "nu", "ra", "si", "to", "ve", "zu", "pra", "gle", "dro", "fli")
         for b in ("tan", "mor", "lek", "pis", "dun", "vel", "sor", "kim", "rat", "bon", "nix", "ful")]


def sentence(seed: int, n: int = 14) -> str:
    """Deterministic pseudo-words; different seeds give texts with Jaccard far below 0.5."""
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB) for _ in range(n)).capitalize() + "."

GOOD_ANSWER = "The monthly fee for the Everyday account is 5 pounds, waived above 1,000 pounds."


def alpaca(i: int, **kw) -> dict:
    rec = {"instruction": sentence(i, 8) + "?", "input": "", "output": sentence(1000 + i, 16)}
    rec.update(kw)
    return rec


def write_messy(raw: Path) -> dict[str, dict[str, int]]:
    """Write the messy corpus into ``raw``; return {file: {reason: count, "kept": n, "read": n}}."""
    raw.mkdir(parents=True, exist_ok=True)
    exp: dict[str, dict[str, int]] = {}
    # 1. JSONL (alpaca) with a malformed line, a non-object line, an empty output, a placeholder
    #    input, an exact duplicate, CRLF line ends.
    lines = [json.dumps(alpaca(i)) for i in range(10)]
    lines += ['{"instruction": "broken', "42", json.dumps(alpaca(10, output="")),
              json.dumps(alpaca(11, input="<No Input>")), json.dumps(alpaca(3))]
    (raw / "a_alpaca.jsonl").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    exp["a_alpaca.jsonl"] = {"read": 15, "kept": 11, "invalid_json": 1, "not_an_object": 1, "empty_output": 1,
                             "exact_duplicate": 1}
    # 2. A JSON array saved as .jsonl, in ShareGPT format, with a BOM.
    convs = [{"conversations": [{"from": "human", "value": sentence(2000 + i, 8)},
                                {"from": "gpt", "value": sentence(3000 + i)}]}
             for i in range(5)]
    convs.append({"conversations": [{"from": "gpt", "value": "I start"}, {"from": "human", "value": "wrong order"}]})
    (raw / "b_sharegpt_array.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(convs, indent=1).encode())
    exp["b_sharegpt_array.jsonl"] = {"read": 6, "kept": 5, "bad_role_order": 1}
    # 3. A GBK-encoded CSV without an encoding param: every row rejected, nothing crashes.
    (raw / "c_gbk.csv").write_bytes("question,answer\n开户需要什么材料？,需要身份证和手机号码，办理时间约十五分钟。\n"
                                    "转账限额是多少？,每日网上转账限额为五万元人民币，柜台转账不设上限。\n".encode("gbk"))
    exp["c_gbk.csv"] = {"read": 2, "kept": 0, "encoding_error": 2}
    # 4. A chat log (one turn per row) with an unknown role and a session ending with the customer.
    rows = ["session_id,role,text,timestamp"]
    for s in range(4):
        rows += [f"S{s},customer,{sentence(4000 + s, 8)},2024-01-0{s + 1}T10:00:00",
                 f"S{s},agent,{sentence(5000 + s)},2024-01-0{s + 1}T10:01:00"]
    rows += ["S9,customer,Hello I need help with my account please,2024-01-09T10:00:00",
             "S9,supervisor,I am taking over this conversation now.,2024-01-09T10:01:00",
             "S9,agent,\"Sure, what do you need help with today?\",2024-01-09T10:02:00",
             "S8,customer,Hello is anyone there to help me?,2024-01-08T10:00:00"]
    (raw / "d_chats.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    exp["d_chats.csv"] = {"read": 6, "kept": 4, "unknown_role": 1, "bad_role_order": 1}
    # 5. A FAQ TSV with odd column names (mapped by aliases) and a row with too many fields.
    tsv = ["Query\tReply\tTopic"] + [f"{sentence(6000 + i, 8)}\t{sentence(7000 + i)}\tcards" for i in range(3)]
    tsv.append("extra\tfields\there\toops")
    (raw / "e_faq.tsv").write_text("\n".join(tsv) + "\n", encoding="utf-8")
    exp["e_faq.tsv"] = {"read": 4, "kept": 3, "bad_field_count": 1}
    (raw / "README.md").write_text("not data\n", encoding="utf-8")  # excluded by default
    return exp


@pytest.fixture
def messy_raw(tmp_path: Path) -> tuple[Path, dict]:
    raw = tmp_path / "data" / "raw"
    return raw, write_messy(raw)
