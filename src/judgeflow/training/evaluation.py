"""Evaluation of the trained policies on the held-out questions (never used for pairs).

The base policy and each trained one (`results/<run>/dpo/<variant>/model`) answer every held-out
question `evaluation.n_samples` times with the same per-draw seeds (a paired design). Then:

- judge pass rates per criterion and overall, with the same judges and k-of-J as the pairs
  (`judging.judge_items` + `judging.aggregate`);
- exact pass rates where a programmatic verifier exists (`verifier.verify`: the IFBench checkers);
- the oracle's pairwise preference of each trained policy against the base on the same question
  and draw, asked in both presentation orders. A comparison counts only when the two orders agree
  (win, loss or tie); orders that disagree are `inconsistent`, an answer without a verdict line
  in either order is `abstain`; both are counted and reported. The win rate is
  wins / (wins + losses) with a Clopper-Pearson interval (scipy).
"""
from __future__ import annotations

import gc
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from judgeflow.generation.prompting import load_template, stable_seed
from judgeflow.judging.verdicts import label_with_probs, n_verdicts
from judgeflow.models import GenRequest, Sampling
from judgeflow.workflow.io import Checkpoint, read_jsonl, read_jsonl_many, write_csv, write_json

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Evaluation, HFModelSpec, Judging, OracleSection

log = logging.getLogger(__name__)

BASE = "base"
ALL = "(all)"
WIN, LOSS, TIE, INCONSISTENT, ABSTAIN = "win", "loss", "tie", "inconsistent", "abstain"
_PREF_LINE = re.compile(r"^[\s*_`>#-]*verdict[\s*_`]*:[\s*_`]*(a|b|tie)[\s*_`.!]*$", re.IGNORECASE)


# ------------------------------------------------------------------------------ pure functions


def parse_preference(text: str) -> str:
    """'A', 'B' or 'TIE' from the answer line "Verdict: A|B|TIE"; 'abstain' otherwise (none, or lines
    that disagree)."""
    labels = {m.group(1).upper() for line in text.splitlines() if (m := _PREF_LINE.match(line))}
    return labels.pop() if len(labels) == 1 else ABSTAIN


def order_outcome(label: str, policy_is_a: bool) -> str:
    """One presentation order's verdict from the trained policy's side: win, loss, tie or abstain."""
    if label == "TIE":
        return TIE
    if label in ("A", "B"):
        return WIN if (label == "A") == policy_is_a else LOSS
    return ABSTAIN


def combine_orders(first: str, second: str) -> str:
    """A comparison from its two orders: the shared outcome when they agree, else inconsistent;
    abstain when either order gave no verdict."""
    if ABSTAIN in (first, second):
        return ABSTAIN
    return first if first == second else INCONSISTENT


def win_rate(counts: dict, confidence: float = 0.95) -> dict:
    """wins / (wins + losses) over the comparisons both orders agree on, with a Clopper-Pearson
    interval; ties, inconsistent and abstain counted beside it."""
    from scipy.stats import binomtest

    w, l = counts.get(WIN, 0), counts.get(LOSS, 0)
    out = {"wins": w, "losses": l, "ties": counts.get(TIE, 0), "inconsistent": counts.get(INCONSISTENT, 0),
           "abstain": counts.get(ABSTAIN, 0)}
    out["comparisons"] = sum(out[k] for k in ("wins", "losses", "ties", "inconsistent", "abstain"))
    if w + l == 0:
        return {**out, "win_rate": None, "win_rate_ci_low": None, "win_rate_ci_high": None}
    ci = binomtest(w, w + l).proportion_ci(confidence_level=confidence, method="exact")
    return {**out, "win_rate": round(w / (w + l), 4), "win_rate_ci_low": round(float(ci.low), 4),
            "win_rate_ci_high": round(float(ci.high), 4)}


def _rate(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def pass_rates(generations: list[dict], aggregates: dict[str, dict], verified: dict[str, dict | None]) -> list[dict]:
    """Per policy and criterion (and overall "(all)"): judge and verifier pass rates."""
    # (policy, criterion id) -> {"n": responses, "pass": passed}
    judge: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    ver: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for g in generations:
        pol, iid = g["policy"], g["item_id"]
        agg = aggregates.get(iid)
        if agg is not None:
            for cid, c in agg["criteria"].items():
                judge[(pol, cid)]["n"] += 1
                judge[(pol, cid)]["pass"] += c["accepted"]
            judge[(pol, ALL)]["n"] += 1
            judge[(pol, ALL)]["pass"] += agg["accepted"]
        v = verified.get(iid)
        if v is not None:
            for cid, ok in v["criteria"].items():
                ver[(pol, cid)]["n"] += 1
                ver[(pol, cid)]["pass"] += ok
            ver[(pol, ALL)]["n"] += 1
            ver[(pol, ALL)]["pass"] += v["all"]
    policies = list(dict.fromkeys(g["policy"] for g in generations))
    rows = []
    for pol in policies:
        crits = sorted({cid for (p, cid) in list(judge) + list(ver) if p == pol and cid != ALL})
        for cid in [ALL] + crits:
            j, v = judge.get((pol, cid), Counter()), ver.get((pol, cid), Counter())
            rows.append({"policy": pol, "criterion_id": cid, "responses": j["n"] or v["n"],
                         "judge_pass_rate": _rate(j["pass"], j["n"]), "judge_n": j["n"],
                         "verifier_pass_rate": _rate(v["pass"], v["n"]), "verifier_n": v["n"]})
    return rows


# ------------------------------------------------------------------------------------ the stage


def trained_policies(variants: list[str], summaries: list[str], model_dirs: list[str]) -> tuple[dict, dict]:
    """({variant: model dir} of the variants that trained, {variant: reason} of the skipped ones)."""
    trained, skipped = {}, {}
    for v, s, d in zip(variants, summaries, model_dirs):
        with open(s) as fh:
            summary = json.load(fh)
        if summary.get("skipped"):
            skipped[v] = summary.get("reason", "skipped")
        else:
            trained[v] = d
    return trained, skipped


def generate_all(questions: list[dict], policies: dict[str, str], evaluation: Evaluation, spec: HFModelSpec,
                 system_prompt: str | None, seed: int, output: str, threads: int | None = None) -> list[dict]:
    """Every policy answers every held-out question evaluation.n_samples times (same seeds across policies).
    `spec`: the trained policy's model entry (models.<training.model>: device, dtype, batch size);
    `system_prompt`: sampling.system_prompt."""
    from judgeflow.models.hf import HFModel

    assert evaluation.max_new_tokens is not None  # null = sampling.max_new_tokens, resolved by the settings
    sampling = Sampling(evaluation.max_new_tokens, evaluation.temperature, evaluation.top_p)
    work = []
    for pol in policies:
        for q in questions:
            for i in range(evaluation.n_samples):
                iid = f"{pol}/{q['question_id']}/s{i}"
                req = GenRequest.chat(q["prompt"], system=system_prompt, sampling=sampling,
                                      seed=stable_seed(seed, "evaluate", q["question_id"], i))
                work.append((pol, iid, req, {"item_id": iid, "response_id": iid, "refinement_id": None,
                                             "policy": pol, "question_id": q["question_id"], "sample_index": i}))
    ckpt = Checkpoint(output, key="item_id")
    for pol, path in policies.items():
        todo = [w for w in work if w[0] == pol and w[1] not in ckpt]
        if not todo:
            continue
        model = HFModel(f"policy:{pol}", path, device=spec.device, dtype=spec.dtype,
                        batch_size=spec.batch_size, threads=threads)
        gens = model.generate([w[2] for w in todo], desc=f"evaluate {pol}")
        ckpt.add_many({**w[3], "text": g.text, "finish_reason": g.finish_reason,
                       "completion_tokens": g.completion_tokens, "seed": w[2].seed} for w, g in zip(todo, gens))
        del model
        gc.collect()
    ckpt.finish(output, [w[1] for w in work])
    return [ckpt.done[w[1]] for w in work]


def verify_all(generations: list[dict], questions: dict[str, dict]) -> tuple[dict[str, dict | None], dict]:
    """{item_id: verify() result or None}; checker failures (e.g. missing NLTK data) counted, not fatal."""
    from judgeflow.judging.verifier import verify

    out: dict[str, dict | None] = {}
    errors: Counter[str] = Counter()
    for g in generations:
        try:
            out[g["item_id"]] = verify(questions[g["question_id"]], g["text"])
        except Exception as e:  # noqa: BLE001 - a checker that cannot run here: no exact verdict, counted
            out[g["item_id"]] = None
            errors[f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"] += 1
    if errors:
        log.warning("verifier errors (no exact verdict for those responses): %s", dict(errors))
    return out, dict(errors)


VERIFIER = "verifier"


def _verifier_preferences(pending: list, questions: dict[str, dict], texts: dict) -> list[tuple[str, str]]:
    """(label, raw) per pending comparison from the exact verifier; label as parse_preference gives it."""
    from judgeflow.judging.verifier import compare

    out = []
    for (key, _, a, b) in pending:
        label, why = compare(questions[key[1]], texts[a], texts[b])
        out.append((label or ABSTAIN, why))
    return out


def compare_with_oracle(generations: list[dict], questions: dict[str, dict], evaluation: Evaluation | None,
                        seed: int, oracle) -> list[dict]:
    """Both presentation orders of (trained, base) per question and draw; one record per comparison.

    `oracle` is a model (its verdict line "Verdict: A|B|TIE") or "verifier": the exact comparer (the
    response that satisfies more of the question's instructions wins; equal counts are a tie).
    `evaluation`: the LLM comparer's template and token limit (evaluation.oracle_template,
    evaluation.oracle_max_new_tokens); the verifier reads none (None is fine then). `seed`: the run's."""
    by = {(g["policy"], g["question_id"], g["sample_index"]): g for g in generations}
    exact = oracle == VERIFIER
    if not exact:  # the comparer's settings: read only with an LLM (the verifier has none)
        if evaluation is None:
            raise ValueError("compare_with_oracle: an LLM oracle needs the evaluation section (its oracle_template "
                             "and oracle_max_new_tokens)")
        template = load_template(evaluation.oracle_template, {"question", "response_a", "response_b"},
                                 "evaluation.oracle_template")
        sampling = Sampling(evaluation.oracle_max_new_tokens, 0.0, 1.0)
    # (key, policy_is_a, a's item_id, b's item_id) with the verifier, else (key, policy_is_a, request)
    pending: list[tuple] = []
    for (pol, qid, i), g in by.items():
        if pol == BASE:
            continue
        base = by[(BASE, qid, i)]
        q = questions[qid]
        for policy_is_a in (True, False):
            a, b = (g, base) if policy_is_a else (base, g)
            if exact:
                pending.append(((pol, qid, i), policy_is_a, a["item_id"], b["item_id"]))
                continue
            req = GenRequest.chat(template.format(question=q["prompt"], response_a=a["text"], response_b=b["text"]),
                                  sampling=sampling, score_after="Verdict:", choices=("A", "B", "TIE"),
                                  seed=stable_seed(seed, "compare", pol, qid, i, policy_is_a))
            pending.append(((pol, qid, i), policy_is_a, req))
    if exact:
        texts = {g["item_id"]: g["text"] for g in generations}
        answers = [(label, why, False) for label, why in _verifier_preferences(pending, questions, texts)]
    else:
        gens = oracle.generate([p[2] for p in pending], desc="oracle compare") if pending else []
        answers = [(label_with_probs(parse_preference(g.text), g.choice_probs)[0], g.text, g.cached) for g in gens]
    per: defaultdict[tuple, dict[str, dict]] = defaultdict(dict)
    for (key, policy_is_a, *_), (label, raw, cached) in zip(pending, answers):
        per[key]["policy_first" if policy_is_a else "base_first"] = {
            "label": label, "outcome": order_outcome(label, policy_is_a), "raw": raw, "cached": cached}
    out = []
    for (pol, qid, i), orders in per.items():
        out.append({"comparison_id": f"{pol}/{qid}/s{i}", "policy": pol, "question_id": qid, "sample_index": i,
                    "outcome": combine_orders(orders["policy_first"]["outcome"], orders["base_first"]["outcome"]),
                    **orders})
    return out


def respond_and_judge(evaluation: Evaluation, judging: Judging, spec: HFModelSpec, system_prompt: str | None,
                      seed: int, heldout: str, policy: str, model_dir: str, summary: str | None,
                      generations_out: str, verdicts_out: str, aggregates_out: str,
                      models: Callable[..., AbstractContextManager[dict]], judge_files: Sequence[str] = (),
                      threads: int | None = None) -> None:
    """Rule evaluate_responses, one job per policy (base, or a trained variant; a GPU job): the policy
    answers the held-out questions, the judges label every (response, criterion), k-of-J per response.
    A variant whose training was skipped gets empty outputs. `spec`: the policy's model entry
    (models.<training.model>); `system_prompt`: sampling.system_prompt; `seed`: the run's.
    `judge_files`: the trained and reward-model judges' judge.json (judging.learned_judges).
    `models(*names)` opens models the stage declares (its job's)."""
    from judgeflow.judging.judges import aggregate, judge_items, judges_from_config, learned_judges
    from judgeflow.workflow.io import write_jsonl

    qlist = read_jsonl(heldout, required=("question_id", "prompt"))
    questions = {q["question_id"]: q for q in qlist}
    if summary:
        with open(summary) as fh:
            if json.load(fh).get("skipped"):
                qlist = []
                log.warning("%s: training was skipped, nothing to evaluate", policy)
    generations = (generate_all(qlist, {policy: model_dir}, evaluation, spec, system_prompt, seed, generations_out,
                                threads) if qlist else [])
    if not qlist:
        write_jsonl(generations_out, [])
    if evaluation.judges and generations:
        judges = judges_from_config(judging)
        with models(*dict.fromkeys(j.model for j in judges)) as opened:
            opened = learned_judges(judging, opened, list(judge_files))
            verdicts = judge_items(generations, questions, judging, opened, verdicts_out)
        write_jsonl(aggregates_out, aggregate(verdicts, generations, questions, judging))
    else:
        write_jsonl(verdicts_out, [])
        write_jsonl(aggregates_out, [])


def uses_llm_oracle(evaluation: Evaluation) -> bool:
    """evaluation.oracle names a model (an LLM comparer), neither the verifier nor null: only then are the
    comparer's template, token limit and the Batch API settings (oracle.batch, ...) read."""
    return evaluation.oracle not in (None, VERIFIER)


def evaluate(evaluation: Evaluation, judging: Judging, base_model: str, seed: int, heldout: str,
             variants: list[str], summaries: list[str], model_dirs: list[str],
             generations: list[str], verdicts: list[str], aggregates: list[str], comparisons_out: str,
             table_out: str, summary_out: str, models: Callable[..., AbstractContextManager[dict]],
             batch: OracleSection | None = None) -> dict:
    """Rule evaluate_policies (where the oracle is: an API call, or a server it starts): exact
    verifier verdicts, the oracle's pairwise comparisons, the table and the summary. `models(name)` opens
    the oracle (a model the stage declares). `judging`: J and k (judging.judges[*].id, judging.k);
    `base_model`: training.model, the base policy's models key; `seed`: the run's; `batch`: the oracle
    section's Batch API settings (oracle.batch, ...), read with an LLM comparer only (uses_llm_oracle)."""
    from judgeflow.judging.judges import ABSTAIN as JUDGE_ABSTAIN
    from judgeflow.workflow.io import write_jsonl

    qlist = read_jsonl(heldout, required=("question_id", "prompt"))
    questions = {q["question_id"]: q for q in qlist}
    trained, skipped = trained_policies(variants, summaries, model_dirs)
    policies = {BASE: f"models.{base_model}", **trained}
    notes = []
    if not qlist:
        notes.append(f"{heldout}: no held-out questions (questions.heldout = 0?); nothing evaluated")
    for v, why in skipped.items():
        notes.append(f"{v}: not evaluated, training skipped: {why}")
    gens = read_jsonl_many(generations)
    verdict_list = read_jsonl_many(verdicts)
    aggs = {a["item_id"]: a for a in read_jsonl_many(aggregates)}
    verified, verifier_errors = verify_all(gens, questions)

    comparisons, oracle_stats = [], None
    comparer = evaluation.oracle
    if comparer == VERIFIER and trained and gens:
        comparisons = compare_with_oracle(gens, questions, evaluation, seed, VERIFIER)
    elif comparer and trained and gens:
        if batch is None:
            raise ValueError(f"evaluate: the LLM oracle '{comparer}' (evaluation.oracle) needs the oracle section's "
                             "Batch API settings (oracle.batch)")
        with models(comparer) as opened:
            from judgeflow.models.batch import batched

            oracle = batched(opened, comparer, batch, "oracle.batch")[comparer]
            comparisons = compare_with_oracle(gens, questions, evaluation, seed, oracle)
            oracle_stats = oracle.stats()
    elif not comparer:
        notes.append("no oracle comparison (evaluation.oracle: null)")
    write_jsonl(comparisons_out, comparisons)

    rows = pass_rates(gens, aggs, verified)
    oracle_rates = {pol: win_rate(Counter(c["outcome"] for c in comparisons if c["policy"] == pol),
                                  evaluation.confidence) for pol in trained}
    oracle_cols = ["wins", "losses", "ties", "inconsistent", "abstain", "comparisons", "win_rate",
                   "win_rate_ci_low", "win_rate_ci_high"]
    for r in rows:
        o = oracle_rates.get(r["policy"]) if r["criterion_id"] == ALL else None
        for c in oracle_cols:
            r[f"oracle_{c}"] = o[c] if o else None
    write_csv(table_out, rows, list(rows[0]) if rows else
              ["policy", "criterion_id", "responses", "judge_pass_rate", "judge_n", "verifier_pass_rate",
               "verifier_n"] + [f"oracle_{c}" for c in oracle_cols])
    summary = {
        "heldout_questions": len(qlist), "n_samples": evaluation.n_samples, "policies": policies,
        "skipped": skipped, "notes": notes,
        "judges": {"J": n_verdicts(judging), "k": judging.k,
                   "verdicts": len(verdict_list), "abstain": sum(v["label"] == JUDGE_ABSTAIN for v in verdict_list)},
        "verifier": {"verifiable_responses": sum(v is not None for v in verified.values()), "errors": verifier_errors},
        "oracle": {"model": comparer, "confidence": evaluation.confidence, "per_policy": oracle_rates,
                   "stats": oracle_stats},
        "table": rows,
    }
    write_json(summary_out, summary)
    for n in notes:
        log.warning("%s", n)
    log.info("evaluation: %s", json.dumps({"oracle": oracle_rates, "notes": notes}))
    return summary
