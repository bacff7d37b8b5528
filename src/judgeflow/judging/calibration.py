"""The judges' calibration split: oracle labels of random responses, the judges that learn from them,
and every judge measured on them.

The split (`judging.calibration.questions` kept questions, set aside by clean_questions, disjoint from
the held-out questions and from every question a later stage samples) gets `n_samples` responses per
question from the policy: random draws, selected by no judge. The oracle (`oracle.labeller`) labels each
(response, criterion) x = 1 (met) or 0. The exact verifier (`label_with_verifier`) labels every (response,
instruction criterion), free; generic criteria have no verifier and get no label. An LLM oracle
(`label_with_oracle`: a models key, e.g. GPT-4.1 over the openai backend, through its API cache) is asked
once per (response, criterion), generic criteria included, with the question narrowed to that one
criterion, and makes at most `judging.calibration.budget` calls: past it, whole responses (all their
criteria) of a seeded random subset are labelled, the rest left unlabelled. An abstaining oracle gives
no label.

A judge of kind `trained` fits a logistic head on its frozen model's hidden states
(judgeflow.judging.trained); one of kind `reward_model` gets a Platt calibration of its reward model's
score (judgeflow.models.reward_model.Calibration). Either way every labelled row also gets an
OUT-OF-FOLD P(YES): folds over questions (StratifiedGroupKFold), each row scored by a model fitted
without its question (for the trained head, C chosen inside the training folds too). The judge's
threshold, unless the config gives one, maximises Youden's J = p1 - p0 on those out-of-fold
predictions (which makes p1 - p0 at that threshold slightly optimistic; AUC and Brier do not depend on
it).

`calibration_table` measures every judge (prompt judges on their verdicts of the same responses, learned
judges out of fold) and the k-of-J aggregate (YES when at least k judges say YES; its score for AUC and
Brier is the judges' mean P(YES)) against x: p1 = P(Y=1 | x=1), p0 = P(Y=1 | x=0), AUC, Brier and
Cohen's kappa, each with a 95% interval from a bootstrap over QUESTIONS (a question's rows are
correlated: several responses, several criteria), per judge, per criterion kind (instruction id) and
over all rows. These are the judges' quality on random responses of the policy; the judges' accept
decisions downstream (refinements, first accepted draws, Best-of-N winners) select responses, on which
a judge may do worse: that gap is the reward hacking the study measures.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from judgeflow.errors import ConfigError, InputError
from judgeflow.workflow.io import honour_umask, write_csv, write_json, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.settings import JudgeSpec, Judging, OracleSection

log = logging.getLogger(__name__)
AGGREGATE = "k-of-J"


def label_with_verifier(responses: list[dict], questions: dict[str, dict], where: str) -> list[dict]:
    """One record per (response, instruction criterion): x = 1 if the verifier says it is met, else 0."""
    from judgeflow.judging.verifier import verify

    out, unverifiable = [], set()
    for r in responses:
        q = questions[r["question_id"]]
        v = verify(q, r["text"])
        if v is None or v.get("all") is None:
            unverifiable.add(q["question_id"])
            continue
        by_id = {c["criterion_id"]: c for c in q["criteria"]}
        for cid, ok in v["criteria"].items():
            out.append({"response_id": r["response_id"], "question_id": q["question_id"], "criterion_id": cid,
                        "instruction_id": by_id[cid].get("instruction_id"), "x": int(ok), "oracle": "verifier"})
    if unverifiable:
        log.warning("%d calibration questions have no verifier verdict (not instruction criteria, or a checker "
                    "failed): their responses are not labelled", len(unverifiable))
    if not out:
        raise InputError(f"{where}: no calibration response could be labelled by the verifier (the calibration "
                         "questions need instruction criteria: questions.source ifbench or composed)")
    log.info("calibration labels: %d (response, criterion) pairs, %d met", len(out), sum(o["x"] for o in out))
    return out


def budgeted_responses(responses: list[dict], n_criteria: dict[str, int], budget: int, seed: int) -> list[dict]:
    """The responses whose every criterion the oracle labels within `budget` calls: all of them when they
    fit, else a prefix of a seeded random order of the responses, taken while their criteria fit (so the
    subset is uniform over responses, and a larger budget labels a superset: a rerun pays only the new
    ones). `n_criteria`: response_id -> its criteria. The responses keep their order."""
    if sum(n_criteria.values()) <= budget:
        return list(responses)
    import random

    from judgeflow.generation.prompting import stable_seed

    order = sorted(r["response_id"] for r in responses)
    random.Random(stable_seed(seed, "calibration-budget")).shuffle(order)
    chosen, used = set(), 0
    for rid in order:
        if used + n_criteria[rid] > budget:
            break
        chosen.add(rid)
        used += n_criteria[rid]
    return [r for r in responses if r["response_id"] in chosen]


def label_with_oracle(responses: list[dict], questions: dict[str, dict], judging: Judging, oracle: OracleSection,
                      seed: int, models: dict, where: str) -> list[dict]:
    """One record per (response, criterion) an LLM oracle (`oracle.labeller`, a models key) labels: x = 1
    if it says the criterion is met, else 0. One call per pair, the question narrowed to that criterion
    (its own criteria and the generic ones alike); at most `judging.calibration.budget` calls (whole
    responses of a seeded random subset past it, `budgeted_responses`). An abstention gives no record."""
    from judgeflow.judging.judges import criteria_for
    from judgeflow.oracle.labelling import Oracle

    budget = judging.calibration.budget
    criteria = {r["response_id"]: criteria_for(questions[r["question_id"]], judging) for r in responses}
    total = sum(len(c) for c in criteria.values())
    chosen = budgeted_responses(responses, {rid: len(c) for rid, c in criteria.items()}, budget, seed)
    if len(chosen) < len(responses):
        log.warning("calibration labels: %d (response, criterion) pairs exceed judging.calibration.budget=%d: the "
                    "oracle labels %d of the %d responses (a seeded random subset, every criterion of each); %d "
                    "responses (%d pairs) are left unlabelled", total, budget, len(chosen), len(responses),
                    len(responses) - len(chosen), total - sum(len(criteria[r["response_id"]]) for r in chosen))
    pairs, keys = [], []
    for r in chosen:
        q = questions[r["question_id"]]
        for c in criteria[r["response_id"]]:
            pairs.append(({**q, "criteria": [c]}, {"draw_id": f"{r['response_id']}|{c['criterion_id']}",
                                                   "text": r["text"]}))
            keys.append((r, c))
    labeller = Oracle(oracle, models)
    got = labeller.label(pairs) if pairs else []
    out, abstained = [], 0
    for (r, c), g in zip(keys, got):
        if g["label"] is None:
            abstained += 1
            continue
        out.append({"response_id": r["response_id"], "question_id": r["question_id"], "criterion_id": c["criterion_id"],
                    "instruction_id": c.get("instruction_id"), "criterion": c["description"],
                    "x": int(g["label"]), "oracle": labeller.name,
                    "reason": g["reason"]})
    if abstained:
        log.warning("calibration labels: the oracle abstained (no verdict) on %d of %d (response, criterion) pairs: "
                    "they have no label", abstained, len(pairs))
    if not out:
        sizes = sorted(len(c) for c in criteria.values()) or [0]
        why = (f"judging.calibration.budget={budget} is too small for one whole response of the seeded order "
               f"(they have {sizes[0]} to {sizes[-1]} criteria each)" if not pairs
               else f"the oracle '{labeller.name}' abstained on all {len(pairs)} pairs it was asked")
        raise InputError(f"{where}: no calibration response could be labelled by the oracle ({why})")
    log.info("calibration labels: %d (response, criterion) pairs by the oracle '%s' in %d calls, %d met", len(out),
             labeller.name, len(pairs), sum(o["x"] for o in out))
    return out


@dataclass(frozen=True)
class Row:
    """One labelled (response, criterion) of the calibration split."""
    response_id: str
    question_id: str
    criterion_id: str
    instruction_id: str | None
    question: str
    criterion: str
    response: str
    x: int


def learning_rows(labels: list[dict], responses: list[dict], questions: dict[str, dict], key: str,
                  where: str) -> list[Row]:
    """The rows a judge learns from; a ConfigError naming `key` when the labels are all one class."""
    texts = {r["response_id"]: r["text"] for r in responses}
    rows = []
    for lab in labels:
        q = questions[lab["question_id"]]
        # a generic criterion (an LLM oracle labels those too) is not among the question's own: its
        # label record carries its text
        text = lab.get("criterion") or next(c["description"] for c in q["criteria"]
                                            if c["criterion_id"] == lab["criterion_id"])
        rows.append(Row(lab["response_id"], lab["question_id"], lab["criterion_id"], lab.get("instruction_id"),
                        q["prompt"], text, texts[lab["response_id"]], int(lab["x"])))
    xs = {r.x for r in rows}
    if len(xs) < 2:
        what = "met" if xs == {1} else "failed"
        raise ConfigError(f"{key}: every one of the {len(rows)} calibration labels ({where}) says the criterion is "
                          f"{what}: a judge cannot learn from one class. Give the calibration split more questions "
                          "(judging.calibration.questions) or questions the policy sometimes fails and sometimes meets")
    return rows


def _save_atomically(write_into, outputs: dict[str, str]) -> None:
    """`write_into(directory)` writes the files named by `outputs`' keys into a temporary directory;
    each is then moved onto its output path (same file system), with the umask's mode."""
    first = Path(next(iter(outputs.values())))
    first.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".train_judge.", dir=first.parent))
    try:
        write_into(tmp)
        honour_umask(tmp)
        for name, dest in outputs.items():
            os.replace(tmp / name, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fit_learned_judge(spec: JudgeSpec, model, base_path: str, rows: list[Row], *, seed: int, folds: int, key: str,
                      judge_out: str, head_out: str, oof_out: str) -> dict:
    """Fit (trained) or calibrate (reward_model) one judge on `rows`; write judge.json, head.npz and the
    out-of-fold P(YES) per row (oof.jsonl). Returns the out-of-fold quality at the judge's threshold."""
    from judgeflow.judging.trained import FeatureSpec, features, judge_text, quality, train, youden_threshold

    conversations = [judge_text(r.question, r.criterion, r.response) for r in rows]
    x = np.array([r.x for r in rows])
    groups = np.array([r.question_id for r in rows])
    n_questions = len(set(groups))
    if n_questions < folds:
        raise ConfigError(f"{key}: {n_questions} calibration questions have labels, fewer than the "
                          f"judging.calibration.folds={folds} folds over questions")
    if spec.kind == "trained":
        layers = tuple(spec.layers) if spec.layers else FeatureSpec.default(model.model).layers
        fspec = FeatureSpec(layers=layers, pooling=tuple(spec.pooling), max_tokens=spec.max_tokens)
        X = features(model.model, model.tokenizer, conversations, fspec, batch_size=model.batch_size)
        judge, result, q = train(X, x, groups, base_path, fspec, seed=seed, folds=folds, threshold=spec.threshold)
        oof, threshold = result.oof, judge.threshold

        def write_into(d):
            judge.save(d)
    else:
        from judgeflow.judging.trained import grouped_splits
        from judgeflow.models.reward_model import Calibration

        scores = np.asarray(model.score(conversations), dtype=float)
        oof = np.zeros(len(rows))
        for train_idx, test_idx in grouped_splits(scores[:, None], x, groups, folds, seed):
            if len(set(x[train_idx])) < 2:  # a training fold of one class: its smoothed rate
                oof[test_idx] = (x[train_idx].sum() + 0.5) / (len(train_idx) + 1)
                continue
            oof[test_idx] = Calibration.fit(scores[train_idx], x[train_idx]).apply(scores[test_idx])
        cal = Calibration.fit(scores, x)
        threshold = spec.threshold if spec.threshold is not None else youden_threshold(x, oof)
        q = quality(x, oof, groups, threshold, seed=seed)

        def write_into(d):
            import json

            np.savez(d / "head.npz", a=np.array([cal.a]), b=np.array([cal.b]))
            meta = {"format": "judgeflow-reward-calibration", "version": 1, "base_model": base_path,
                    "a": cal.a, "b": cal.b, "threshold": float(threshold),
                    "threshold_rule": "given" if spec.threshold is not None else "youden",
                    "training": {"n": len(rows), "n_pos": int(x.sum()), "n_questions": n_questions, "folds": folds,
                                 "seed": seed}, "quality": q}
            (d / "judge.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _save_atomically(write_into, {"judge.json": judge_out, "head.npz": head_out})
    write_jsonl(oof_out, [{"response_id": r.response_id, "question_id": r.question_id, "criterion_id": r.criterion_id,
                           "instruction_id": r.instruction_id, "x": r.x, "p_yes": round(float(p), 6),
                           "yes": int(p >= threshold)} for r, p in zip(rows, oof)])
    log.info("judge %s (%s): out-of-fold AUC %s, p1 %s, p0 %s at threshold %.4f (%d rows, %d questions)",
             spec.id, spec.kind, q["auc"], q["p1"], q["p0"], threshold, len(rows), n_questions)
    return q


# ------------------------------------------------------------------------------------ measuring

TABLE_COLUMNS = ["judge", "kind", "criterion_kind", "n", "n_questions", "n_pos", "p1", "p1_low", "p1_high", "p0",
                 "p0_low", "p0_high", "p1_minus_p0", "auc", "auc_low", "auc_high", "brier", "brier_low",
                 "brier_high", "brier_constant", "kappa", "kappa_low", "kappa_high", "out_of_fold"]


def _row(judge: str, kind: str, criterion_kind: str, q: dict, out_of_fold: bool) -> dict:
    def r(v):
        return None if v is None else round(float(v), 4)

    row = {"judge": judge, "kind": kind, "criterion_kind": criterion_kind, "n": q["n"],
           "n_questions": q["n_questions"], "n_pos": q["n_pos"], "out_of_fold": out_of_fold}
    for m in ("p1", "p0", "auc", "brier", "kappa"):
        row[m] = r(q[m])
        ci = q.get(f"{m}_ci") or [None, None]
        row[f"{m}_low"], row[f"{m}_high"] = r(ci[0]), r(ci[1])
    row["brier_constant"] = r(q["brier_constant"])
    row["p1_minus_p0"] = r(q["p1"] - q["p0"]) if q["p1"] is not None and q["p0"] is not None else None
    return row


def calibration_table(labels: list[dict], verdicts: list[dict], judges: list[JudgeSpec], k: int, seed: int,
                      n_boot: int = 1000) -> tuple[list[dict], dict]:
    """Rows of judges/calibration.csv and its summary. `verdicts`: one per (response, criterion, judge) with
    `label` (yes/no/abstain) and `p_yes` (learned judges: out of fold); `judges`: judging.judges."""
    from judgeflow.judging.judges import YES
    from judgeflow.judging.trained import quality

    by_key: defaultdict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for v in verdicts:
        by_key[(v["response_id"], v["criterion_id"])][v["judge_id"]] = v
    ids = [j.id for j in judges]
    kinds = {j.id: j.kind for j in judges}
    rows_x, qids, ckinds, yes, p = [], [], [], defaultdict(list), defaultdict(list)
    for lab in labels:
        got = by_key.get((lab["response_id"], lab["criterion_id"]), {})
        if set(got) != set(ids):
            raise InputError(f"calibration verdicts: ({lab['response_id']}, {lab['criterion_id']}) has verdicts of "
                             f"{sorted(got)}, expected every judge {ids}")
        rows_x.append(int(lab["x"]))
        qids.append(lab["question_id"])
        ckinds.append(lab.get("instruction_id") or lab["criterion_id"])
        votes = 0
        for j in ids:
            yes[j].append(int(got[j]["label"] == YES))
            votes += yes[j][-1]
            # no P(YES) (an API judge without logprobs): its verdict stands in, 0 or 1
            p[j].append(float(got[j]["p_yes"]) if got[j]["p_yes"] is not None else float(yes[j][-1]))
        yes[AGGREGATE].append(int(votes >= k))
        p[AGGREGATE].append(float(np.mean([p[j][-1] for j in ids])))
    x, g, ck = np.array(rows_x), np.array(qids), np.array(ckinds)
    table: list[dict] = []
    summary: dict[str, Any] = {
        "rows": len(x), "questions": len(set(qids)), "positives": int(x.sum()), "k": k,
        "judges": {}, "note": "on random responses of the policy (the calibration split), not on "
                              "responses the judges selected; learned judges out of fold; "
                              "intervals: bootstrap over questions"}
    for j in [*ids, AGGREGATE]:
        kind = kinds.get(j, f"{k} of {len(ids)}")
        oof = kinds.get(j, "prompt") != "prompt" or (j == AGGREGATE and any(v != "prompt" for v in kinds.values()))
        yj, pj = np.array(yes[j]), np.array(p[j])
        whole = quality(x, pj, g, 0.5, seed=seed, n_boot=n_boot, yes=yj)
        table.append(_row(j, kind, "all", whole, oof))
        summary["judges"][j] = table[-1]
        for c in sorted(set(ckinds)):
            m = ck == c
            if m.sum() >= 2:
                table.append(_row(j, kind, c, quality(x[m], pj[m], g[m], 0.5, seed=seed, n_boot=n_boot,
                                                      yes=yj[m]), oof))
    return table, summary


def write_calibration(table: list[dict], summary: dict, table_out: str, summary_out: str) -> None:
    write_csv(table_out, table, TABLE_COLUMNS)
    write_json(summary_out, summary)
