"""Preference pairs (refined ≻ original) in TRL's conversational prompt/chosen/rejected format.

A refinement makes a pair only if the aggregated judges accept it: on the criteria it
targeted (`pairs.require: targeted`, the default) or on all of the question's criteria
(`pairs.require: all`).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from judgeflow.judging.verdicts import ABSTAIN
from judgeflow.refining.refine import FULL, MULTI

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Pairs


def is_accepted(agg: dict, targeted: list[str], require: str) -> bool:
    if require == "all":
        return agg["accepted"]
    return all(agg["criteria"][cid]["accepted"] for cid in targeted)


def build_pairs(questions: dict[str, dict], responses: list[dict], refinements: list[dict],
                refinement_aggregates: list[dict], response_aggregates: list[dict],
                verdicts: list[dict], pairs: Pairs) -> tuple[dict[str, list[dict]], list[dict], dict]:
    """Return ({mode: pairs}, per-criterion summary rows, overall summary); `pairs.require` says which
    criteria a refinement must pass to make a pair."""
    require = pairs.require
    resp = {r["response_id"]: r for r in responses}
    ragg = {a["refinement_id"]: a for a in refinement_aggregates}
    made: dict[str, list[dict]] = {MULTI: [], FULL: []}
    tried: Counter[tuple[str, str]] = Counter()     # (mode, criterion id) -> refinements
    accepted: Counter[tuple[str, str]] = Counter()
    for f in refinements:
        agg = ragg[f["refinement_id"]]
        ok = is_accepted(agg, f["criterion_ids"], require)
        for cid in f["criterion_ids"]:
            tried[(f["mode"], cid)] += 1
            accepted[(f["mode"], cid)] += ok
        if not ok:
            continue
        q, orig = questions[f["question_id"]], resp[f["response_id"]]
        made[f["mode"]].append({
            "prompt": [{"role": "user", "content": q["prompt"]}],
            "chosen": [{"role": "assistant", "content": f["text"]}],
            "rejected": [{"role": "assistant", "content": orig["text"]}],
            "question_id": q["question_id"], "response_id": orig["response_id"],
            "refinement_id": f["refinement_id"], "criterion_ids": f["criterion_ids"],
        })
    judged: Counter[str] = Counter()
    failing: Counter[str] = Counter()
    for a in response_aggregates:
        for cid, n in a["criteria"].items():
            judged[cid] += 1
            failing[cid] += not n["accepted"]
    abstain: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for v in verdicts:
        kind = "refinement" if v["refinement_id"] else "response"
        abstain[v["criterion_id"]][kind + "_verdicts"] += 1
        abstain[v["criterion_id"]][kind + "_abstain"] += v["label"] == ABSTAIN
    rows = []
    for cid in sorted(judged):
        row = {"criterion_id": cid, "responses_judged": judged[cid], "responses_failing": failing[cid],
               "response_fail_rate": _rate(failing[cid], judged[cid])}
        for mode in (MULTI, FULL):
            row[f"{mode}_refinements"] = tried[(mode, cid)]
            row[f"{mode}_accepted"] = accepted[(mode, cid)]
            row[f"{mode}_acceptance_rate"] = _rate(accepted[(mode, cid)], tried[(mode, cid)])
        for kind in ("response", "refinement"):
            row[f"{kind}_verdicts"] = abstain[cid][f"{kind}_verdicts"]
            row[f"{kind}_abstain"] = abstain[cid][f"{kind}_abstain"]
        rows.append(row)
    n_ref = Counter(f["mode"] for f in refinements)
    overall = {
        "questions": len(questions), "responses": len(responses),
        "responses_accepted": sum(a["accepted"] for a in response_aggregates),
        "require": require,
        "verdicts": len(verdicts), "abstain": sum(v["label"] == ABSTAIN for v in verdicts),
        "forced_verdicts": sum(bool(v.get("forced")) for v in verdicts),
        **{f"{m}_refinements": n_ref[m] for m in (MULTI, FULL)},
        **{f"{m}_pairs": len(made[m]) for m in (MULTI, FULL)},
    }
    return made, rows, overall


def _rate(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None
