"""Sample until the judges accept: the draws behind TP(N) and Best-of-N.

For each question the policy draws one response per round; the J judges label it on every
criterion and the k-of-J aggregate decides acceptance. A question stops at its first accepted
draw (N = that draw's index) or after `draws.n_max` draws; with `draws.min_draws` = m every
question is drawn at least m times (Best-of-N needs the first m draws of every question).

A draw record: `draw_id`, `question_id`, `draw` (1-based), `text`, `accepted` and `failed` (the
workflow's k-of-J per criterion, then all criteria; `k` is that k), `verdicts` ({criterion_id: [1
(YES), 0 (NO) or None (abstained, or no verdict) per judge, in judging.judges order]}: what
Best-of-N re-aggregates), `judge_accepts` ({judge_id: said YES on every criterion}), `score` (the
judges' mean P(YES) over every judge and criterion; None when a verdict has no P(YES)),
`tiebreak` (a uniform number seeded by the config's seed, the question and the draw: Best-of-N
breaks ties in `score` by it), `first_accept`, `n_accept`, `n_max`.

Rounds are batched across questions and each finished round is kept on disk
(`.<output>.rounds/round-<r>.*.jsonl`), so a killed job resumes at the round it was in.
"""
from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from judgeflow.errors import ConfigError
from judgeflow.generation.prompting import stable_seed
from judgeflow.generation.resumable import generate_resumable
from judgeflow.judging.judges import NO, YES, aggregate, criteria_for, judge_items
from judgeflow.judging.verdicts import verdict_ids
from judgeflow.models import GenRequest, Sampling
from judgeflow.workflow.io import read_jsonl, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Draws, Judging, SamplingSection

log = logging.getLogger(__name__)
# the fields of a draw record that the oracle stages read
DRAW_FIELDS = ("draw_id", "question_id", "draw", "text", "n_max")
# and those best_of_n reads besides (a draws file written before them: rerun sample_until_accept)
BON_FIELDS = ("accepted", "k", "verdicts", "score", "tiebreak")
# any other label (abstain, or None: no verdict) is None: not a YES
VOTE: dict[str | None, int] = {YES: 1, NO: 0}


def draw_id(question_id: str, index: int) -> str:
    return f"{question_id}/d{index}"


def _round(questions: list[dict], r: int, draws: Draws, scfg: SamplingSection, judging: Judging, seed: int,
           models: dict, work: Path) -> tuple[list, list, list]:
    name = draws.model
    if name is None or draws.max_new_tokens is None:  # null = sampling's: resolved when the settings are validated
        raise ConfigError(f"draws.{'model' if name is None else 'max_new_tokens'}: null, not resolved "
                          "(the settings were not validated)")
    sampling = Sampling(draws.max_new_tokens, scfg.temperature, scfg.top_p)
    texts_file, verdicts_file, agg_file = (work / f"round-{r}.{kind}.jsonl"
                                           for kind in ("draws", "verdicts", "aggregate"))
    if texts_file.exists():
        drawn = read_jsonl(texts_file)
    else:
        jobs = []
        for q in questions:
            did = draw_id(q["question_id"], r)
            req = GenRequest.chat(q["prompt"], system=scfg.system_prompt, sampling=sampling,
                                  seed=stable_seed(seed, "draw", q["question_id"], r))
            jobs.append((did, req, {"draw_id": did, "question_id": q["question_id"], "draw": r, "model": name}))
        drawn = generate_resumable(models[name], jobs, str(texts_file), key="draw_id", desc=f"draw {r}")
    items = [{**d, "item_id": d["draw_id"], "response_id": d["draw_id"], "refinement_id": None} for d in drawn]
    qmap = {q["question_id"]: q for q in questions}
    if verdicts_file.exists():
        verdicts = read_jsonl(verdicts_file)
    else:
        verdicts = judge_items(items, qmap, judging, models, str(verdicts_file))
    if agg_file.exists():
        aggs = read_jsonl(agg_file)
    else:
        aggs = aggregate(verdicts, items, qmap, judging)
        write_jsonl(agg_file, aggs)
    return drawn, verdicts, aggs


def judge_accepts(verdicts: list[dict], question: dict, judging: Judging) -> dict[str, bool]:
    """Per verdict column (a judge, or one sample of a sampled judge: verdict_ids): did it say YES on
    every criterion of this draw (its own, un-aggregated verdict)?"""
    crits = {c["criterion_id"] for c in criteria_for(question, judging)}
    out = {}
    for vid in verdict_ids(judging):
        yes = {v["criterion_id"] for v in verdicts if v["judge_id"] == vid and v["label"] == YES}
        out[vid] = crits <= yes
    return out


def criterion_verdicts(verdicts: list[dict], question: dict, judging: Judging) -> dict[str, list]:
    """Per criterion of the draw: each judge's verdict (1 YES, 0 NO, None abstained or missing), in
    judging.judges order: the matrix that k-of-J per criterion, then all criteria, aggregates."""
    label = {(v["criterion_id"], v["judge_id"]): v["label"] for v in verdicts}
    judge_ids = verdict_ids(judging)
    return {c["criterion_id"]: [VOTE.get(label.get((c["criterion_id"], j))) for j in judge_ids]
            for c in criteria_for(question, judging)}


def judges_score(verdicts: list[dict]) -> float | None:
    """The judges' mean P(YES) over every judge and criterion of the draw; None if a verdict has no
    P(YES) (a mean over the others would weigh the judges unevenly) or there is no verdict."""
    ps = [v.get("p_yes") for v in verdicts]
    known = [p for p in ps if p is not None]
    if not ps or len(known) < len(ps):
        return None
    return round(sum(known) / len(known), 6)


def draw_tiebreak(seed, question_id: str, draw: int) -> float:
    """A uniform number in [0, 1) for the draw, fixed by the config's seed, the question and the draw:
    among draws the judges score the same, Best-of-N keeps the one with the highest."""
    return random.Random(stable_seed(seed, "bon-tiebreak", question_id, draw)).random()


def sample_until_accept(questions: list[dict], draws: Draws, sampling: SamplingSection, judging: Judging,
                        seed: int, models: dict, output: str, verdicts_output: str) -> list[dict]:
    """Draw per question (`draws`: the draws section; `sampling`: the policy's temperature, top_p and
    system prompt) until the k-of-J judges (`judging`) accept; `seed` seeds every draw and tie-break."""
    n_max, min_draws = draws.n_max, draws.min_draws
    work = Path(output).parent / f".{Path(output).name}.rounds"
    work.mkdir(parents=True, exist_ok=True)
    by_q: dict[str, list[dict]] = {q["question_id"]: [] for q in questions}
    all_verdicts: list[dict] = []
    first_accept: dict[str, int] = {}
    for r in range(1, n_max + 1):
        active = [q for q in questions if q["question_id"] not in first_accept or r <= min_draws]
        if not active:
            break
        drawn, verdicts, aggs = _round(active, r, draws, sampling, judging, seed, models, work)
        acc = {a["item_id"]: a for a in aggs}
        per_draw: dict[str, list[dict]] = {}
        for v in verdicts:
            per_draw.setdefault(v["response_id"], []).append(v)
        qmap = {q["question_id"]: q for q in active}
        for d in drawn:
            a, mine, q = acc[d["draw_id"]], per_draw.get(d["draw_id"], []), qmap[d["question_id"]]
            rec = {**d, "accepted": a["accepted"], "failed": a["failed"], "k": a["k"],
                   "verdicts": criterion_verdicts(mine, q, judging), "judge_accepts": judge_accepts(mine, q, judging),
                   "score": judges_score(mine), "tiebreak": draw_tiebreak(seed, d["question_id"], r),
                   "first_accept": False}
            if a["accepted"] and d["question_id"] not in first_accept:
                first_accept[d["question_id"]] = r
                rec["first_accept"] = True
            by_q[d["question_id"]].append(rec)
        all_verdicts.extend(verdicts)
        log.info("round %d: %d drawn, %d questions accepted so far of %d", r, len(drawn), len(first_accept),
                 len(questions))
    records = []
    for q in questions:
        for rec in by_q[q["question_id"]]:
            records.append({**rec, "n_accept": first_accept.get(q["question_id"]), "n_max": n_max})
    write_jsonl(verdicts_output, all_verdicts)
    write_jsonl(output, records)
    shutil.rmtree(work, ignore_errors=True)
    return records
