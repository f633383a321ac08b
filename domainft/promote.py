"""Promotion: move the registry alias ``champion`` to the ``challenger`` version when its gates pass.

Usage::

    domainft promote                         # gates from params.yaml `promote`; exit 1 when refused
    domainft promote --force --reason "rollback after incident 42"

Gates (params ``promote``), read from the metrics of the run behind each model version (logged by
:func:`domainft.registry.register`). All of them use the task's primary metric
(``evaluate.task``: accuracy for a label task, numeric_match for numbers, ROUGE-L or the judge's
correctness for free text), never ROUGE-L alone:

=====================  ======================================  =========================================
gate                   metric                                  passes when
=====================  ======================================  =========================================
beats_base             ``eval.primary.delta_ci_low``           > 0: the 95% CI of tuned - base lies
                                                               above 0 (``require_improvement``)
beats_baselines        ``eval.primary.tuned``,                 tuned > the best trivial baseline
                       ``eval.primary.baseline``               (majority label, constant answer)
no_collapse            ``eval.flags.tuned.any``                == 0: no collapse / loop / copy flag
                                                               (``require_no_collapse``)
champion               ``eval.primary.tuned``                  >= champion's - ``champion_tolerance``
                                                               (no champion yet: passes)
judge_win_rate         ``eval.judge.pairwise.win_rate``        >= ``min_judge_win_rate``; off when that
                                                               is null; FAILS when no judge ran
merge_fidelity         ``merge.passed`` (1.0 / 0.0)            == 1 (when ``require_merge_fidelity``)
no_leakage             ``split.leakage.total``,                both == 0 (when ``require_no_leakage``):
                       ``eval.overlap.total``                  no split leakage, no evaluated row that
                                                               overlaps train/val
general_ppl            ``eval.retention.response_ppl.ratio``   <= 1 + ``max_general_ppl_increase``
general_metric         ``eval.retention.rouge_l.delta``        >= -``max_general_metric_drop``
remit                  ``eval.remit.rate.tuned``               >= ``min_remit_rate``
=====================  ======================================  =========================================

With the preference stage on, the register stage also registers the SFT+DPO model as its own
version (alias ``challenger-dpo``, tagged with the SFT version it came from and the hash of the
verdicts behind it); its run metrics hold its own evaluation against the base under the same
``eval.*`` keys and its own merge fidelity as ``merge.passed``. ``domainft promote`` then considers
both candidates of that pipeline run, SFT+DPO first, prints every gate of each, and promotes the
first whose gates all pass. SFT+DPO has one gate more:

=====================  ======================================  =========================================
vs_sft                 ``preference.vs_sft.primary.delta``     >= -``champion_tolerance``: DPO is not
                                                               worse than the SFT model it came from
=====================  ======================================  =========================================

``--candidate sft|dpo`` considers one of them only (``--force`` forces the first considered).

A required metric that is missing fails its gate (a version cannot prove it passed). ``--force``
moves the alias despite failing gates and needs a reason, stored on the version as the tag
``domainft.promote.reason`` (with ``domainft.promote.forced = true``). Every decision is written to
version tags: ``domainft.promote.decision``, ``domainft.promote.gates`` (JSON) and, on promotion,
``domainft.promote.previous_champion`` and ``domainft.promote.at`` (UTC ISO 8601).

Caveat: the primary metric of two versions is comparable only on the same test split and task;
when the data changed, compare ``dvc.test_split.md5`` tags (``domainft promote`` prints both)
before trusting the champion gate.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone


from domainft.config import Params, PromoteParams
from domainft.errors import DomainftError

PRIMARY_KEY = "eval.primary.tuned"
CI_LOW_KEY = "eval.primary.delta_ci_low"
BASELINE_KEY = "eval.primary.baseline"
FLAGS_KEY = "eval.flags.tuned.any"
JUDGE_KEY = "eval.judge.pairwise.win_rate"
MERGE_KEY = "merge.passed"
LEAK_KEY = "split.leakage.total"
OVERLAP_KEY = "eval.overlap.total"
TAG = "domainft.promote."


class PromoteError(DomainftError, RuntimeError):
    """The registry has no such model or no ``challenger`` version to promote."""


@dataclass
class Gate:
    """One gate: ``status`` is ``pass``, ``fail``, ``skip`` (not applicable) or ``off`` (disabled)."""

    name: str
    value: float | None
    threshold: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass
class Candidate:
    """One version :func:`promote` considered: ``kind`` is ``sft`` (@challenger) or ``dpo``
    (@challenger-dpo, the SFT+DPO model of the same pipeline run)."""

    kind: str
    version: int
    gates: list[Gate] = field(default_factory=list)

    @property
    def failing(self) -> list[str]:
        return [g.name for g in self.gates if not g.ok]

    @property
    def label(self) -> str:
        return {"sft": "SFT", "dpo": "SFT+DPO"}.get(self.kind, self.kind)


@dataclass
class PromoteResult:
    """Outcome of :func:`promote`; ``decision`` is promoted, forced, refused or already_champion.

    ``challenger`` and ``gates`` are those of the version decided on (promoted or forced; refused:
    the first considered); ``candidates`` lists every version considered with its gates.
    """

    model_name: str
    challenger: int
    champion_before: int | None
    champion_after: int | None
    decision: str
    gates: list[Gate] = field(default_factory=list)
    reason: str | None = None
    test_split: dict[str, str | None] = field(default_factory=dict)  # side -> dvc.test_split.md5
    kind: str = "sft"
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def failing(self) -> list[str]:
        return [g.name for g in self.gates if not g.ok]

    def to_dict(self) -> dict:
        return {**asdict(self), "failing": self.failing,
                "candidates": [{**asdict(c), "failing": c.failing} for c in self.candidates]}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def evaluate_gates(challenger: dict[str, float], champion: dict[str, float] | None,
                   gates: PromoteParams) -> list[Gate]:
    """Check the challenger's run metrics against the base, the baselines, the champion and thresholds.

    Args:
        challenger, champion: run metrics (``eval.primary.tuned`` ...); champion None = none yet.
        gates: params ``promote``.

    Returns:
        One :class:`Gate` per gate, in the order beats_base, beats_baselines, no_collapse,
        champion, judge_win_rate, merge_fidelity, no_leakage, then those of
        :func:`retention_gates` that apply. A gate that is on and whose metric is missing fails,
        naming the metric.
    """
    out = []
    get = challenger.get
    tuned = get(PRIMARY_KEY)

    def need(name: str, keys: tuple[str, ...], on: bool, param: str, threshold: str, test) -> None:
        values = [get(k) for k in keys]
        shown = values[0]  # the first metric; the detail column gives the others
        if not on:
            out.append(Gate(name, shown, f"off (promote.{param}: false)", "off"))
        elif any(v is None for v in values):
            lacking = ", ".join(k for k, v in zip(keys, values) if v is None)
            out.append(Gate(name, shown, threshold, "fail", f"challenger lacks {lacking}"))
        else:
            ok, detail = test(*values)
            out.append(Gate(name, shown, threshold, "pass" if ok else "fail", detail))

    need("beats_base", (CI_LOW_KEY, "eval.primary.delta"), gates.require_improvement, "require_improvement",
         "95% CI low of tuned - base > 0",
         lambda low, d: (low > 0, f"delta {d:+.4g}, CI low {low:+.4g}"))
    need("beats_baselines", (PRIMARY_KEY, BASELINE_KEY), gates.require_improvement, "require_improvement",
         f"tuned > best trivial baseline ({_fmt(get(BASELINE_KEY))})",
         lambda t, b: (t > b, f"tuned {t:.4g} vs baseline {b:.4g}"))
    need("no_collapse", (FLAGS_KEY,), gates.require_no_collapse, "require_no_collapse", f"{FLAGS_KEY} == 0",
         lambda f: (f == 0, "flags: " + (", ".join(k for k in ("collapse", "loop", "copy")
                                                   if get(f"eval.flags.tuned.{k}")) or "none")))
    if champion is None:
        out.append(Gate("champion", tuned, "no champion yet", "pass" if tuned is not None else "fail",
                        "" if tuned is not None else f"challenger lacks {PRIMARY_KEY}"))
    elif champion.get(PRIMARY_KEY) is None or tuned is None:
        side = "challenger" if tuned is None else "champion"
        out.append(Gate("champion", tuned, "?", "fail", f"{side} lacks {PRIMARY_KEY}"))
    else:
        floor = champion[PRIMARY_KEY] - gates.champion_tolerance
        out.append(Gate("champion", tuned, f">= {floor:.4f} (champion {champion[PRIMARY_KEY]:.4f} - "
                        f"{gates.champion_tolerance:g})", "pass" if tuned >= floor else "fail"))

    win = get(JUDGE_KEY)
    if gates.min_judge_win_rate is None:
        out.append(Gate("judge_win_rate", win, "off (promote.min_judge_win_rate: null)", "off"))
    elif win is None:
        out.append(Gate("judge_win_rate", None, f">= {gates.min_judge_win_rate:g}", "fail",
                        f"challenger lacks {JUDGE_KEY} (no judge verdicts)"))
    else:
        out.append(Gate("judge_win_rate", win, f">= {gates.min_judge_win_rate:g}",
                        "pass" if win >= gates.min_judge_win_rate else "fail"))

    need("merge_fidelity", (MERGE_KEY,), gates.require_merge_fidelity, "require_merge_fidelity",
         f"{MERGE_KEY} == 1", lambda v: (v == 1.0, ""))
    need("no_leakage", (LEAK_KEY, OVERLAP_KEY), gates.require_no_leakage, "require_no_leakage",
         f"{LEAK_KEY} == 0 and {OVERLAP_KEY} == 0",
         lambda leak, ov: (leak == 0 and ov == 0, f"split leakage {leak:g}, evaluated rows in train/val {ov:g}"))
    out += retention_gates(challenger, gates)
    return out


RET_PPL_KEYS = ("eval.retention.response_ppl.ratio", "eval.retention.response_ppl.base", "eval.retention.response_ppl.tuned")
RET_METRIC_KEYS = ("eval.retention.rouge_l.delta", "eval.retention.rouge_l.base", "eval.retention.rouge_l.tuned")
REMIT_KEYS = ("eval.remit.rate.tuned", "eval.remit.rate.base")


def retention_gates(challenger: dict[str, float], gates: PromoteParams) -> list[Gate]:
    """general_ppl, general_metric and remit gates (evaluate.retention / evaluate.remit figures).

    A gate is listed when its param is set (then a missing figure fails it) or when the challenger
    has its figures (shown as ``off``); otherwise it is left out.

    * general_ppl: ``eval.retention.response_ppl.ratio`` (tuned / base perplexity of the general
      set's reference answers) <= 1 + ``max_general_ppl_increase``;
    * general_metric: ``eval.retention.rouge_l.delta`` (tuned - base) >= -``max_general_metric_drop``;
    * remit: ``eval.remit.rate.tuned`` (share of off-domain probes declined) >= ``min_remit_rate``.
    """
    get, out = challenger.get, []
    specs = (
        ("general_ppl", RET_PPL_KEYS, "max_general_ppl_increase", lambda lim: f"ppl ratio <= {1 + lim:.4g}",
         lambda lim, r, b, t: (r <= 1 + lim, f"response ppl {b:.4g} -> {t:.4g} (x{r:.3f})")),
        ("general_metric", RET_METRIC_KEYS, "max_general_metric_drop", lambda lim: f"ROUGE-L delta >= {-lim:+.4g}",
         lambda lim, d, b, t: (d >= -lim, f"ROUGE-L {b:.4g} -> {t:.4g} ({d:+.4g})")),
        ("remit", REMIT_KEYS, "min_remit_rate", lambda lim: f"declined share >= {lim:.4g}",
         lambda lim, t, b: (t >= lim, f"off-domain probes declined: base {b:.4g}, tuned {t:.4g}")),
    )
    for name, keys, param, threshold, test in specs:
        lim, values = getattr(gates, param), [get(k) for k in keys]
        if lim is None:
            if values[0] is not None:
                out.append(Gate(name, values[0], f"off (promote.{param}: null)", "off"))
        elif any(v is None for v in values):
            lacking = ", ".join(k for k, v in zip(keys, values) if v is None)
            out.append(Gate(name, values[0], threshold(lim), "fail", f"challenger lacks {lacking}"))
        else:
            ok, detail = test(lim, *values)
            out.append(Gate(name, values[0], threshold(lim), "pass" if ok else "fail", detail))
    return out


VS_SFT_KEYS = ("preference.vs_sft.primary.delta", "preference.vs_sft.primary.delta_ci_low",
               "preference.vs_sft.primary.delta_ci_high")


def vs_sft_gate(challenger: dict[str, float], gates: PromoteParams) -> Gate:
    """The SFT+DPO version's extra gate: its primary metric minus the SFT model's (paired, on the
    test split, ``preference.vs_sft.primary.delta``) >= -``champion_tolerance``."""
    values = [challenger.get(k) for k in VS_SFT_KEYS]
    threshold = f"DPO - SFT >= {-gates.champion_tolerance:+.4g}"
    if any(v is None for v in values):
        lacking = ", ".join(k for k, v in zip(VS_SFT_KEYS, values) if v is None)
        return Gate("vs_sft", values[0], threshold, "fail", f"challenger lacks {lacking}")
    d, low, high = values
    return Gate("vs_sft", d, threshold, "pass" if d >= -gates.champion_tolerance else "fail",
                f"primary DPO - SFT {d:+.4g}, 95% CI [{low:+.4g}, {high:+.4g}]")


def _version_by_alias(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def promote(params: Params, force: bool = False, reason: str | None = None, candidate: str = "auto") -> PromoteResult:
    """Move ``champion`` to the ``challenger`` version of ``domainft-<domain>`` (or to its SFT+DPO
    version ``challenger-dpo``) if its gates pass.

    Args:
        params: tracking URI (``register``; ``MLFLOW_TRACKING_URI`` wins), model name, gates
            (``promote``).
        force: move the alias even when gates fail (needs ``reason``); the first candidate considered.
        reason: free text recorded as the version tag ``domainft.promote.reason``.
        candidate: ``auto`` (SFT+DPO when registered for the @challenger version, then SFT),
            ``sft`` or ``dpo``.

    Returns:
        :class:`PromoteResult`; the alias moved iff ``decision`` is promoted or forced.

    Raises:
        ValueError: ``force`` without a non-empty ``reason``.
        PromoteError: the tracking server does not answer (after MLflow's own retries,
            ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``); the registered model or its ``challenger`` alias
            does not exist; ``dpo``
            asked for without a @challenger-dpo version of the @challenger's run.
    """
    from domainft.registry import ALIAS_CHALLENGER, ALIAS_CHALLENGER_DPO, ALIAS_CHAMPION, model_name
    from domainft.tracking import setup_mlflow

    if force and not (reason and reason.strip()):
        raise ValueError("--force needs --reason TEXT (recorded on the model version)")
    mlflow = setup_mlflow(params)
    client = mlflow.MlflowClient()
    name = model_name(params)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":  # unreachable or failing server, after MLflow's retries
            first = str(err.message).strip().splitlines()[0][:300] if str(err.message).strip() else err.error_code
            raise PromoteError(f"MLflow at {mlflow.get_tracking_uri()} did not answer ({first}); start the server "
                               "or fix MLFLOW_TRACKING_URI / register.tracking_uri") from None
        raise PromoteError(f"registered model {name!r} not found at {mlflow.get_tracking_uri()}; "
                           "run `dvc repro` (stage register) first") from None
    chal = _version_by_alias(client, name, ALIAS_CHALLENGER)
    if chal is None:
        raise PromoteError(f"{name} has no @{ALIAS_CHALLENGER} version; run the register stage first")
    dpo = _version_by_alias(client, name, ALIAS_CHALLENGER_DPO)
    if dpo is not None and dpo.tags.get("domainft.sft_version") != str(chal.version):
        dpo = None  # from an older pipeline run than @challenger: no candidate
    if candidate == "dpo" and dpo is None:
        raise PromoteError(f"{name} has no @{ALIAS_CHALLENGER_DPO} version tuned from @{ALIAS_CHALLENGER} "
                           f"v{chal.version}; switch the preference stage on (preference.enabled) and run dvc repro")
    versions = [("dpo", dpo)] if dpo is not None and candidate in ("auto", "dpo") else []
    versions += [("sft", chal)] if candidate in ("auto", "sft") else []
    champ = _version_by_alias(client, name, ALIAS_CHAMPION)
    champ_v = int(champ.version) if champ else None
    chal_run = client.get_run(chal.run_id)
    champ_run = client.get_run(champ.run_id) if champ else None
    result = PromoteResult(name, int(versions[0][1].version), champ_v, champ_v, "refused", reason=reason,
                           test_split={"challenger": chal_run.data.tags.get("dvc.test_split.md5"),
                                       "champion": champ_run.data.tags.get("dvc.test_split.md5") if champ_run else None},
                           kind=versions[0][0])
    if champ_v is not None and any(int(v.version) == champ_v for _, v in versions):
        kind = next(k for k, v in versions if int(v.version) == champ_v)
        result.challenger, result.kind, result.decision = champ_v, kind, "already_champion"
        return result
    champ_metrics = champ_run.data.metrics if champ_run else None
    for kind, mv in versions:
        run_metrics = (chal_run if mv is chal else client.get_run(mv.run_id)).data.metrics
        gates = evaluate_gates(run_metrics, champ_metrics, params.promote)
        if kind == "dpo":
            gates.append(vs_sft_gate(run_metrics, params.promote))
        result.candidates.append(Candidate(kind, int(mv.version), gates))
    chosen = next((c for c in result.candidates if not c.failing), None)
    if chosen is not None:
        result.decision = "promoted"
    elif force:
        result.decision, chosen = "forced", result.candidates[0]
    decided = chosen or result.candidates[0]
    result.challenger, result.kind, result.gates = decided.version, decided.kind, decided.gates
    for c in result.candidates:
        own = result.decision if c is decided else ("refused" if c.failing else "not_chosen")
        tags = {TAG + "decision": own,
                TAG + "gates": json.dumps([asdict(g) for g in c.gates], separators=(",", ":"))}
        if reason:
            tags[TAG + "reason"] = reason
        if c is decided and result.decision in ("promoted", "forced"):
            client.set_registered_model_alias(name, ALIAS_CHAMPION, str(c.version))
            result.champion_after = c.version
            tags[TAG + "previous_champion"] = str(champ_v) if champ_v else "none"
            tags[TAG + "at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            tags[TAG + "forced"] = str(result.decision == "forced").lower()
        for k, v in tags.items():
            client.set_model_version_tag(name, str(c.version), k, v)
    return result


def print_result(result: PromoteResult, file=None) -> None:
    """Rich table of the gates (value, threshold, status) and a one-line decision."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, width=120)
    champ = f"v{result.champion_before}" if result.champion_before else "none"
    several = len(result.candidates) > 1
    for c in result.candidates or ([Candidate(result.kind, result.challenger, result.gates)] if result.gates else []):
        what = f"challenger v{c.version} ({c.label})" if several or c.kind != "sft" else f"challenger v{c.version}"
        table = Table(title=f"{result.model_name}: {what} vs champion {champ}")
        for col in ("gate", "value", "threshold", "status", "detail"):
            table.add_column(col, justify="right" if col == "value" else "left")
        for g in c.gates:
            style = {"pass": "green", "fail": "bold red"}.get(g.status, "dim")
            value = "-" if g.value is None else f"{g.value:.4g}"
            table.add_row(g.name, value, g.threshold, f"[{style}]{g.status}[/]", g.detail)
        console.print(table)
    ts = result.test_split
    if ts.get("champion") and ts.get("challenger") and ts["champion"] != ts["challenger"]:
        console.print(f"note: test splits differ (champion {ts['champion'][:12]}, challenger "
                      f"{ts['challenger'][:12]}); the champion gate compares different questions")
    msg = {"promoted": f"promoted v{result.challenger} to @champion (was {champ})",
           "forced": f"FORCED v{result.challenger} to @champion (was {champ}) despite failing gates: "
                     f"{', '.join(result.failing)}; reason: {result.reason}",
           "already_champion": f"v{result.challenger} is already @champion; nothing to do",
           "refused": "refused: " + "; ".join(
               f"v{c.version}{f' ({c.label})' if several else ''} fails gate(s) {', '.join(c.failing)}"
               for c in (result.candidates or [Candidate(result.kind, result.challenger, result.gates)]))
               + f"; @champion stays {champ}"}[result.decision]
    if result.decision in ("promoted", "forced") and several:
        msg += f" ({next(c.label for c in result.candidates if c.version == result.challenger)})"
    console.print(msg, markup=False)
