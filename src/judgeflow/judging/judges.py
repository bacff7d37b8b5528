"""Judges: verdict parsing, the judging stage, and k-of-J aggregation.

A judge is a model + a prompt template + a seed. It writes a short critique and the fixed
answer line "Verdict: YES" or "Verdict: NO" (after the critique, or first with
`answer_first`, where its turn starts with "Verdict:"). Anything else is `abstain`: counted
and reported, never guessed. With the hf backend, P(YES) is read from the next-token
distribution right after "Verdict:". With `force_verdict`, a judge that wrote no answer line
gets "Verdict:" appended and its own greedy continuation is parsed like any answer line
(still `abstain` unless it says YES or NO); the record says `forced: true`.

Where the text has no verdict line, a judge that answers first in one or two tokens is read from its
first word ("Y" of YES), and an openai judge from the logprobs at its answer token. A judge with a
`threshold` says YES exactly when P(YES) reaches it (a calibrated judge). Each verdict record says
where its label came from (`label_from`: text, first_token, logprobs, forced, threshold or none).
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judgeflow.errors import InputError
from judgeflow.generation.prompting import load_template, stable_seed
from judgeflow.judging.verdicts import (
    ABSTAIN,
    NO,
    VERDICT_PREFIX,
    YES,
    critique_of,
    label_from_answer_start,
    label_with_probs,
    parse_verdict,
    prefix_for_score,
)
from judgeflow.models import GenRequest, Sampling
from judgeflow.workflow.io import Checkpoint

if TYPE_CHECKING:
    from judgeflow.judging.trained import SharedFeatures
    from judgeflow.workflow.settings import Judging

__all__ = ["ABSTAIN", "NO", "YES", "Judge", "aggregate", "criteria_for", "judge_items", "judges_from_config",
           "parse_verdict", "verdict_key"]
log = logging.getLogger(__name__)
# the fields that identify one verdict: (item, criterion, judge) as a tuple, never a joined string
VERDICT_KEY = ("response_id", "refinement_id", "criterion_id", "judge_id")


@dataclass
class Judge:
    judge_id: str
    model: str
    template: str | None  # prompt judges only
    seed: int
    sampling: Sampling
    answer_first: bool = False  # the assistant turn starts with "Verdict:" (hf backend)
    threshold: float | None = None  # YES iff P(YES) >= threshold, where P(YES) is known
    kind: str = "prompt"  # prompt | reward_model | trained (see LearnedJudge)


def judges_from_config(judging: Judging) -> list[Judge]:
    """The judges of `judging.judges` (validated: ids unique, k <= J), prompt judges' templates loaded."""
    return [Judge(j.id, j.model,
                  load_template(j.template, {"question", "response", "criterion"}, f"judging.judges[{i}].template")
                  if j.kind == "prompt" else None,
                  j.seed, Sampling(j.max_new_tokens, j.temperature, j.top_p), j.answer_first, j.threshold, j.kind)
            for i, j in enumerate(judging.judges)]


LEARNED = "judge:"  # models[LEARNED + judge id]: a judge that learned from the calibration split


class LearnedJudge:
    """A judge of kind `trained` or `reward_model`, ready to give P(YES) per (question, criterion,
    response): its model (the frozen hf model under a trained head, or the reward model; opened by the
    stage like any judge's model) and what train_judge fitted on the calibration split (judge.json and
    head.npz: the head, or the reward model's Platt calibration). It says YES iff P(YES) reaches the
    judge's threshold: the config's, else the one train_judge chose (Youden's J, out of fold)."""

    def __init__(self, judge: Judge, model, judge_dir: str | Path):
        from judgeflow.judging.trained import TrainedJudge

        self.judge, self.model, self.dir = judge, model, Path(judge_dir)
        self.shared: SharedFeatures | None = None  # trained: the SharedFeatures of its model (learned_judges sets it)
        if judge.kind == "trained":
            self.head = TrainedJudge.load(self.dir)
            chosen = self.head.threshold
        else:
            from judgeflow.models.reward_model import Calibration

            meta = json.loads((self.dir / "judge.json").read_text(encoding="utf-8"))
            self.calibration, chosen = Calibration(meta["a"], meta["b"]), meta["threshold"]
        self.threshold = judge.threshold if judge.threshold is not None else chosen
        self.calls = self.items = 0

    def p_yes(self, triples: list[tuple[str, str, str]]) -> list[float]:
        """P(YES) of each (question, criterion, response)."""
        from judgeflow.judging.trained import judge_text

        self.calls += 1
        self.items += len(triples)
        conversations = [judge_text(q, c, r) for q, c, r in triples]
        if self.judge.kind == "trained":
            if self.shared is None:
                raise RuntimeError(f"trained judge {self.judge.judge_id}: no shared features of its model "
                                   "(learned_judges sets them)")
            X = self.shared.for_spec(list(triples), conversations, self.head.spec)
            return [float(p) for p in self.head.p_from_features(X)]
        return self.calibration.apply(self.model.score(conversations))

    def stats(self) -> dict:
        return {"judge": self.judge.judge_id, "kind": self.judge.kind, "calls": self.calls, "items": self.items,
                "threshold": self.threshold,
                "shared_feature_passes": None if self.shared is None else self.shared.passes}


def learned_judges(judging: Judging, models: dict, judge_files: list[str]) -> dict:
    """`models` plus {LEARNED + id: LearnedJudge} for every judge of kind trained or reward_model; its
    files are judges/<id>/judge.json among `judge_files` (the stage's inputs: a retrained judge reruns it)."""
    from judgeflow.judging.trained import SharedFeatures

    dirs = {Path(f).parent.name: Path(f).parent for f in judge_files}
    out = dict(models)
    trained = defaultdict(list)  # (model key, max_tokens) -> its trained judges: one hidden-state pass
    for i, j in enumerate(judges_from_config(judging)):
        if j.kind == "prompt":
            continue
        if j.judge_id not in dirs:
            raise InputError(f"judging.judges[{i}]: no judges/{j.judge_id}/judge.json among the stage's inputs "
                             f"({', '.join(map(str, judge_files)) or 'none'})")
        out[LEARNED + j.judge_id] = judge = LearnedJudge(j, models[j.model], dirs[j.judge_id])
        if j.kind == "trained":
            trained[(j.model, judge.head.spec.max_tokens)].append(judge)
    for (name, _), judges in trained.items():
        model = models[name]
        shared = SharedFeatures(model.model, model.tokenizer, [lj.head.spec for lj in judges],
                                batch_size=model.batch_size)
        for lj in judges:
            lj.shared = shared
    return out


def criteria_for(question: dict, judging: Judging) -> list[dict]:
    """The question's own criteria (one per instruction) plus the configured generic ones.

    Generic criterion ids start with 'generic:' and a question's own never do (both checked where
    they are read), so no criterion can shadow another; a clash is still refused here."""
    out = list(question.get("criteria", [])) + [{"criterion_id": c.criterion_id, "description": c.description}
                                                 for c in judging.generic_criteria]
    ids = [c["criterion_id"] for c in out]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"question '{question['question_id']}': criterion ids {dup} occur twice "
                         "(its own criteria and judging.generic_criteria must not share an id)")
    return out


def verdict_key(v: dict) -> tuple:
    return tuple(v[f] for f in VERDICT_KEY)


def judge_items(items: list[dict], questions: dict[str, dict], judging: Judging, models: dict,
                output: str, chunk: int = 256, finish: bool = True, only: set[str] | None = None) -> list[dict]:
    """Judge every (item, criterion) with every judge; write verdict records to `output`
    (`finish=False`: keep them in its checkpoint instead, see `generate_resumable`). `only`: these judge
    ids alone. A judge of kind trained or reward_model is `models[LEARNED + id]` (`learned_judges`).

    `items` are responses or refinements: dicts with `item_id`, `question_id`, `text`, and
    whatever ids to carry (`response_id`, `refinement_id`).
    """
    judges = [j for j in judges_from_config(judging) if only is None or j.judge_id in only]
    force = judging.force_verdict
    # (verdict key, judge, request (a learned judge: (question, criterion, response)), base record)
    work: list[tuple[tuple, Judge, Any, dict]] = []
    for item in items:
        q = questions[item["question_id"]]
        for c in criteria_for(q, judging):
            for j in judges:
                req: tuple[str, str, str] | GenRequest
                if j.kind != "prompt":
                    req = (q["prompt"], c["description"], item["text"])
                else:
                    if j.template is None:
                        raise ValueError(f"judge {j.judge_id}: a prompt judge needs a template")
                    prompt = j.template.format(question=q["prompt"], response=item["text"],
                                               criterion=c["description"])
                    req = GenRequest.chat(prompt, sampling=j.sampling, score_after=VERDICT_PREFIX,
                                          prefix=VERDICT_PREFIX if j.answer_first else "",
                                          seed=stable_seed(j.seed, item["item_id"], c["criterion_id"]))
                base = {"question_id": item["question_id"],
                        "response_id": item.get("response_id"), "refinement_id": item.get("refinement_id"),
                        "criterion_id": c["criterion_id"], "judge_id": j.judge_id, "model": j.model}
                work.append((verdict_key(base), j, req, base))
    ckpt = Checkpoint(output, key=VERDICT_KEY)
    todo = [w for w in work if w[0] not in ckpt]
    log.info("judging: %d verdicts (%d items, %d judges), %d already done", len(work), len(items),
             len(judges), len(work) - len(todo))
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        by_model = defaultdict(list)
        for w in part:
            by_model[w[1].model if w[1].kind == "prompt" else LEARNED + w[1].judge_id].append(w)
        records = []
        for name, ws in by_model.items():
            model = models[name]
            if isinstance(model, LearnedJudge):
                for w, p in zip(ws, model.p_yes([w[2] for w in ws])):
                    records.append({**w[3], "label": YES if p >= model.threshold else NO, "label_from": "threshold",
                                    "p_yes": round(p, 6), "forced": False, "critique": None, "raw": None,
                                    "finish_reason": None, "completion_tokens": 0, "cached": False})
                continue
            gens = model.generate([w[2] for w in ws], desc="judge")
            raws = [w[2].prefix + g.text for w, g in zip(ws, gens)]  # the judge's whole answer
            labels = [parse_verdict(t) for t in raws]
            sources = ["text" if lab != ABSTAIN else "none" for lab in labels]
            for i, (w, g) in enumerate(zip(ws, gens)):
                # a judge that answers first, in few tokens: its answer's first word ("Y" of "YES")
                if labels[i] == ABSTAIN and w[1].answer_first and w[2].sampling.max_new_tokens <= 2:
                    labels[i] = label_from_answer_start(g.text) or ABSTAIN
                    sources[i] = "first_token" if labels[i] != ABSTAIN else "none"
                if labels[i] == ABSTAIN:  # an endpoint's logprobs at the answer token, where the text slipped
                    labels[i], sources[i] = label_with_probs(labels[i], g.choice_probs)
            p_yes = [g.p_yes for g in gens]
            forced = [False] * len(ws)
            # Where the generation gave no reading (no answer line, or "Verdict:" ending inside a
            # token), continue the judge's own text from "Verdict:" greedily for a few tokens:
            # P(YES) is read at the first of them and, with force_verdict, the judge's own
            # continuation is parsed like any answer line (still abstain unless it says YES/NO).
            redo = [i for i, g in enumerate(gens) if g.p_yes is None or (force and labels[i] == ABSTAIN)]
            if redo and model.supports_prefix:
                reqs = [GenRequest(messages=ws[i][2].messages, prefix=prefix_for_score(raws[i]),
                                   sampling=Sampling(max_new_tokens=4), score_after=VERDICT_PREFIX)
                        for i in redo]
                for i, r, g in zip(redo, reqs, model.generate(reqs, desc="judge verdict")):
                    p_yes[i] = g.p_yes
                    if force and labels[i] == ABSTAIN:
                        forced[i] = True
                        raws[i] = r.prefix + g.text.split("\n")[0]
                        labels[i] = parse_verdict(raws[i].splitlines()[-1])
                        sources[i] = "forced" if labels[i] != ABSTAIN else "none"
            for i, w in enumerate(ws):
                if w[1].threshold is not None and p_yes[i] is not None:  # a calibrated judge
                    labels[i], sources[i] = (YES if p_yes[i] >= w[1].threshold else NO), "threshold"
            for i, (w, g) in enumerate(zip(ws, gens)):
                records.append({**w[3], "label": labels[i], "label_from": sources[i],
                                "p_yes": None if p_yes[i] is None else round(p_yes[i], 6),
                                "forced": forced[i], "critique": critique_of(raws[i]), "raw": raws[i],
                                "finish_reason": g.finish_reason, "completion_tokens": g.completion_tokens,
                                "cached": g.cached})
        ckpt.add_many(records)
    return ckpt.finish(output, [w[0] for w in work], write=finish)


def aggregate(verdicts: list[dict], items: list[dict], questions: dict[str, dict],
              judging: Judging) -> list[dict]:
    """k-of-J per criterion and overall, one record per item.

    A criterion is accepted when at least k judges say YES (abstains are not YES).
    An item is accepted when all its criteria are.
    """
    k = judging.k
    n_judges = len(judging.judges)
    counts: defaultdict[tuple, dict[str, int]] = defaultdict(lambda: {YES: 0, NO: 0, ABSTAIN: 0})
    seen = set()
    for v in verdicts:
        key = verdict_key(v)
        if key in seen:  # one judge counted twice would pass a k-of-J gate it did not pass
            raise InputError(f"two verdicts of judge '{v['judge_id']}' on criterion '{v['criterion_id']}' of "
                             f"{v['refinement_id'] or v['response_id']}")
        seen.add(key)
        counts[(v["response_id"], v["refinement_id"], v["criterion_id"])][v["label"]] += 1
    out = []
    for item in items:
        per = {}
        for c in criteria_for(questions[item["question_id"]], judging):
            n = counts[(item.get("response_id"), item.get("refinement_id"), c["criterion_id"])]
            per[c["criterion_id"]] = {**n, "accepted": n[YES] >= k}
        failed = [cid for cid, n in per.items() if not n["accepted"]]
        out.append({"item_id": item["item_id"], "question_id": item["question_id"],
                    "response_id": item.get("response_id"), "refinement_id": item.get("refinement_id"),
                    "k": k, "J": n_judges, "criteria": per, "failed": failed, "accepted": not failed})
    return out
