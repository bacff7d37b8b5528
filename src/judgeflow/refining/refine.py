"""Refinement of failing responses: one per failed criterion (multi-feedback) and one on all
failed criteria at once (full-feedback), each with the judges' critiques in the prompt."""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from judgeflow.generation.prompting import load_template, stable_seed
from judgeflow.generation.resumable import generate_resumable
from judgeflow.judging.judges import NO, criteria_for
from judgeflow.models import GenRequest, Sampling

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Judging, Refining

MULTI, FULL = "multi_feedback", "full_feedback"


def _critiques(verdicts: list[dict]) -> dict[tuple[str, str], list[str]]:
    """(response_id, criterion_id) -> critiques of the judges that said NO."""
    out = defaultdict(list)
    for v in verdicts:
        if v["label"] == NO and v["critique"]:
            out[(v["response_id"], v["criterion_id"])].append(v["critique"])
    return out


def _bullets(texts: list[str]) -> str:
    return "\n".join(f"- {t}" for t in texts) if texts else "- (no critique given)"


def refine_responses(responses: list[dict], aggregates: list[dict], verdicts: list[dict],
                     questions: dict[str, dict], refining: Refining, judging: Judging, seed: int, model,
                     output: str) -> list[dict]:
    """Refinements of every response the judges reject, per `refining.modes`; `judging`: its generic
    criteria (the failed criteria's descriptions); `seed`: the run's (each refinement's own from it)."""
    one = load_template(refining.template_one, {"question", "response", "criterion", "critiques"},
                        "refining.template_one")
    full = load_template(refining.template_all, {"question", "response", "criteria"},
                         "refining.template_all")
    sampling = Sampling(refining.max_new_tokens, refining.temperature, refining.top_p)
    crit = _critiques(verdicts)
    by_id = {r["response_id"]: r for r in responses}
    work = []
    for agg in aggregates:
        if agg["accepted"]:
            continue
        resp = by_id[agg["response_id"]]
        q = questions[resp["question_id"]]
        described = {c["criterion_id"]: c["description"] for c in criteria_for(q, judging)}
        failed = agg["failed"]
        base = {"response_id": resp["response_id"], "question_id": q["question_id"], "model": refining.model}
        if MULTI in refining.modes:
            for cid in failed:
                fid = f"{resp['response_id']}/mf/{cid}"
                prompt = one.format(question=q["prompt"], response=resp["text"], criterion=described[cid],
                                    critiques=_bullets(crit[(resp["response_id"], cid)]))
                work.append((fid, GenRequest.chat(prompt, sampling=sampling,
                                                  seed=stable_seed(seed, "refine", fid)),
                             {**base, "refinement_id": fid, "mode": MULTI, "criterion_ids": [cid]}))
        if FULL in refining.modes:
            fid = f"{resp['response_id']}/ff"
            listed = "\n".join(f"{n}. {described[cid]}\n{_bullets(crit[(resp['response_id'], cid)])}"
                               for n, cid in enumerate(failed, start=1))
            prompt = full.format(question=q["prompt"], response=resp["text"], criteria=listed)
            work.append((fid, GenRequest.chat(prompt, sampling=sampling,
                                              seed=stable_seed(seed, "refine", fid)),
                         {**base, "refinement_id": fid, "mode": FULL, "criterion_ids": list(failed)}))
    return generate_resumable(model, work, output, key="refinement_id", desc="refine",
                              chunk=refining.checkpoint_every)
