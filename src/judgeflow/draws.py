"""Sample until the judges accept: the draws behind TP(N) and Best-of-N.

For each question the policy draws one response per round; the J judges label it on every
criterion and the k-of-J aggregate decides acceptance. A question stops at its first accepted
draw (N = that draw's index) or after `draws.n_max` draws; with `draws.min_draws` = m every
question is drawn at least m times (Best-of-N needs the first m draws of every question).

Rounds are batched across questions and each finished round is kept on disk
(`.<output>.rounds/round-<r>.*.jsonl`), so a killed job resumes at the round it was in.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .generation import generate_resumable
from .io import read_jsonl, write_jsonl
from .judging import YES, aggregate, criteria_for, judge_items
from .models import GenRequest, Sampling
from .prompting import stable_seed

log = logging.getLogger(__name__)
# the fields of a draw record that the oracle stages read
DRAW_FIELDS = ("draw_id", "question_id", "draw", "text", "n_max")


def draw_id(question_id: str, index: int) -> str:
    return f"{question_id}/d{index}"


def _round(questions: list[dict], r: int, config: dict, models: dict, work: Path) -> tuple[list, list, list]:
    dcfg, scfg = config["draws"], config["sampling"]
    name = dcfg["model"]
    sampling = Sampling(dcfg["max_new_tokens"], scfg["temperature"], scfg["top_p"])
    texts_file, verdicts_file, agg_file = (work / f"round-{r}.{kind}.jsonl"
                                           for kind in ("draws", "verdicts", "aggregate"))
    if texts_file.exists():
        drawn = read_jsonl(texts_file)
    else:
        jobs = []
        for q in questions:
            did = draw_id(q["question_id"], r)
            req = GenRequest.chat(q["prompt"], system=scfg["system_prompt"], sampling=sampling,
                                  seed=stable_seed(config["seed"], "draw", q["question_id"], r))
            jobs.append((did, req, {"draw_id": did, "question_id": q["question_id"], "draw": r, "model": name}))
        drawn = generate_resumable(models[name], jobs, str(texts_file), key="draw_id", desc=f"draw {r}")
    items = [{**d, "item_id": d["draw_id"], "response_id": d["draw_id"], "refinement_id": None} for d in drawn]
    qmap = {q["question_id"]: q for q in questions}
    if verdicts_file.exists():
        verdicts = read_jsonl(verdicts_file)
    else:
        verdicts = judge_items(items, qmap, config, models, str(verdicts_file))
    if agg_file.exists():
        aggs = read_jsonl(agg_file)
    else:
        aggs = aggregate(verdicts, items, qmap, config)
        write_jsonl(agg_file, aggs)
    return drawn, verdicts, aggs


def judge_accepts(verdicts: list[dict], question: dict, config: dict) -> dict[str, bool]:
    """Per judge: did it say YES on every criterion of this draw (its own, un-aggregated verdict)?"""
    crits = {c["criterion_id"] for c in criteria_for(question, config)}
    out = {}
    for j in config["judging"]["judges"]:
        yes = {v["criterion_id"] for v in verdicts if v["judge_id"] == j["id"] and v["label"] == YES}
        out[j["id"]] = crits <= yes
    return out


def sample_until_accept(questions: list[dict], config: dict, models: dict, output: str,
                        verdicts_output: str) -> list[dict]:
    dcfg = config["draws"]
    n_max, min_draws = dcfg["n_max"], dcfg["min_draws"]
    work = Path(output).parent / f".{Path(output).name}.rounds"
    work.mkdir(parents=True, exist_ok=True)
    by_q: dict[str, list[dict]] = {q["question_id"]: [] for q in questions}
    all_verdicts: list[dict] = []
    first_accept: dict[str, int] = {}
    for r in range(1, n_max + 1):
        active = [q for q in questions if q["question_id"] not in first_accept or r <= min_draws]
        if not active:
            break
        drawn, verdicts, aggs = _round(active, r, config, models, work)
        acc = {a["item_id"]: a for a in aggs}
        per_draw: dict[str, list[dict]] = {}
        for v in verdicts:
            per_draw.setdefault(v["response_id"], []).append(v)
        qmap = {q["question_id"]: q for q in active}
        for d in drawn:
            a = acc[d["draw_id"]]
            rec = {**d, "accepted": a["accepted"], "failed": a["failed"],
                   "judge_accepts": judge_accepts(per_draw.get(d["draw_id"], []), qmap[d["question_id"]], config),
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
