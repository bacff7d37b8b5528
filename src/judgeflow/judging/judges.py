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

**A panel** (the default): J distinct judges, one verdict each per (item, criterion), seeded from the judge's
seed, the item and the criterion. **SPaR's judging mode** (a judge with `samples: n > 1` or `holistic: true`):
ONE judge model sampled n times, as thu-coai/SPaR (commit 6497aba) judges a refinement in its tree search,
src/models/get_response.py, `get_value`, lines 85-133 (condensed):

    chat_response = client.chat.completions.create(model=model_path, messages=message,
                                                   temperature=temperature, top_p=top_p, max_tokens=max_tokens, n=n)
    for i in range(n):
        tmp_res = chat_response.choices[i].message.content
        critique.append(tmp_res)
        acc.append(get_acc(tmp_res))                # 1 Yes, 0 No, -1 no "Final Judgement" (a parse failure)
    if acc.count(0) == acc.count(1):                # lines 110-113: a tie, all n drawn again
        critique = []
        acc = []
        continue
    ...
    value = acc.count(1) / (acc.count(0) + acc.count(1))   # line 127: parse failures left out

with n = sample_critique_num = 5 and temperature 0.7 (src/ToT/task.py:19, :84), at most `cnt = 3` tries
(get_response.py:91-93, an API error spending one too, :114-117; after 3 ties it returns ("", 0) and the BFS
drops the child, src/ToT/bfs.py:29-32),
`assert (do_sample and n > 1 and temperature > 0.0) or ...` (:87). Its judgment is holistic: one per
response against the whole prompt (src/tasks/prompts.py:2-11, "Final Judgement (if the Output accurately
follows the Prompt): (Yes or No)"). A parse failure is never redrawn alone: it only drops out of the counts
(so all abstain is a 0 = 0 tie). Here:

* each sample s = 1..n is one verdict, judge id `<id>#s` (the judge's own id when n = 1): J counts samples
  (`verdicts.n_verdicts`), so k-of-J, gates `{k}of{J}` and the tree value treat samples as a panel's judges;
  sample s's draw d (0 first) is seeded `stable_seed(seed, item_id, criterion_id | "holistic", s, d)`;
* `holistic: true`: one judgment of the whole response against all its criteria (`holistic_template`, with
  {question}, {response}, {criteria}), its label recorded on every criterion (one record per (item,
  criterion, sample) still); false: one judgment per criterion (`template`);
* `resample` (default [tie], SPaR's): a tie (as many YES as NO among the n, abstains aside) draws all n
  again; `abstain` (not SPaR's) draws each abstaining sample again; at most `max_resamples` times per
  (item, criterion) (holistic: per item; default 2: SPaR's 3 tries). Then the samples stand: an unresolved
  tie stays one (SPaR would drop the node instead), an abstain is counted by `judging.abstain`;
* their records carry `sample_of` (the judge's id), `sample`, `resamples` (this sample's redraws),
  `holistic`, `exhausted` (still a tie or abstain to redraw at the limit). A panel's records are as before.

`judging.abstain` (`verdicts.abstain_mode`): `drop` (SPaR's, the default where a judge is in its mode) leaves an
abstain out of the value, YES / (YES + NO); `no` (the default of a panel: as before) counts it as a NO,
YES / J. It changes the value only: a criterion passes k-of-J when at least k of its J verdicts say YES
(an abstain is never a YES) either way, so gates, acceptance and the gate names mean the same in both.
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
    abstain_mode,
    critique_of,
    label_from_answer_start,
    label_with_probs,
    n_verdicts,
    parse_verdict,
    prefix_for_score,
    sample_verdict_id,
    to_redraw,
    verdict_ids,
    yes_share,
)
from judgeflow.models import GenRequest, Sampling
from judgeflow.workflow.io import Checkpoint

if TYPE_CHECKING:
    from judgeflow.judging.trained import SharedFeatures
    from judgeflow.workflow.settings import Judging

__all__ = ["ABSTAIN", "NO", "YES", "Judge", "aggregate", "criteria_for", "judge_items", "judges_from_config",
           "load_holistic_template", "n_verdicts", "parse_verdict", "verdict_ids", "verdict_key"]
log = logging.getLogger(__name__)
# the fields that identify one verdict: (item, criterion, judge) as a tuple, never a joined string (a sampled
# judge's sample: its judge id <id>#<s>, verdicts.verdict_ids)
VERDICT_KEY = ("response_id", "refinement_id", "criterion_id", "judge_id")
HOLISTIC_FIELDS = frozenset({"question", "response", "criteria"})  # judging.judges[*].holistic_template
HOLISTIC = "holistic"  # the criterion part of a holistic judgment's seed


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
    # SPaR's judging mode (module docstring): samples, holistic, its template, redraws
    samples: int = 1
    holistic: bool = False
    holistic_template: str | None = None
    max_resamples: int = 0
    resample: tuple[str, ...] = ()

    @property
    def sampled(self) -> bool:
        """SPaR's judging mode: several samples, or one holistic judgment (redrawn by `resample`)."""
        return self.samples > 1 or self.holistic


def load_holistic_template(name_or_path: str, key: str) -> str:
    """A holistic judge's template: exactly {question}, {response}, {criteria} (a ConfigError naming `key`)."""
    return load_template(name_or_path, HOLISTIC_FIELDS, key)


def judges_from_config(judging: Judging) -> list[Judge]:
    """The judges of `judging.judges` (validated: ids unique, k <= J), prompt judges' templates loaded."""
    return [Judge(j.id, j.model,
                  load_template(j.template, {"question", "response", "criterion"}, f"judging.judges[{i}].template")
                  if j.kind == "prompt" else None,
                  j.seed, Sampling(j.max_new_tokens, j.temperature, j.top_p), j.answer_first, j.threshold, j.kind,
                  j.samples, j.holistic,
                  load_holistic_template(j.holistic_template, f"judging.judges[{i}].holistic_template")
                  if j.holistic else None,
                  j.max_resamples, tuple(j.resample))
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
    A judge in SPaR's mode (`samples`, `holistic`: module docstring) gives its samples' verdicts, each
    (item, criterion) — holistic: each item — written once its redraws are done.

    `items` are responses or refinements: dicts with `item_id`, `question_id`, `text`, and
    whatever ids to carry (`response_id`, `refinement_id`).
    """
    judges = [j for j in judges_from_config(judging) if only is None or j.judge_id in only]
    force = judging.force_verdict
    # a panel's judges: (verdict key, judge, request (a learned judge: (question, criterion, response)), base record)
    work: list[tuple[tuple, Judge, Any, dict]] = []
    groups: list[_Group] = []  # SPaR's mode: one judge's samples on one (item, criterion), or (item) if holistic
    order: list[tuple] = []  # every verdict key, item, criterion, judge (then sample) order: the output's
    for item in items:
        q = questions[item["question_id"]]
        crits = criteria_for(q, judging)
        for c in crits:
            for j in judges:
                base = {"question_id": item["question_id"],
                        "response_id": item.get("response_id"), "refinement_id": item.get("refinement_id"),
                        "criterion_id": c["criterion_id"], "judge_id": j.judge_id, "model": j.model}
                if j.sampled:
                    order += [verdict_key({**base, "judge_id": sample_verdict_id(j.judge_id, s, j.samples)})
                              for s in range(1, j.samples + 1)]
                    continue
                req: tuple[str, str, str] | GenRequest
                if j.kind != "prompt":
                    req = (q["prompt"], c["description"], item["text"])
                else:
                    req = GenRequest.chat(judge_prompt(j, q, item["text"], [c]), sampling=j.sampling,
                                          score_after=VERDICT_PREFIX,
                                          prefix=VERDICT_PREFIX if j.answer_first else "",
                                          seed=stable_seed(j.seed, item["item_id"], c["criterion_id"]))
                work.append((verdict_key(base), j, req, base))
                order.append(work[-1][0])
        for j in judges:
            if j.sampled:
                groups += [_Group.of(j, item, q, unit) for unit in ([crits] if j.holistic else [[c] for c in crits])]
    ckpt = Checkpoint(output, key=VERDICT_KEY)
    todo = [w for w in work if w[0] not in ckpt]
    pending = [g for g in groups if not g.done(ckpt)]
    log.info("judging: %d verdicts (%d items, %d judges), %d already done", len(order), len(items),
             len(judges), len(order) - len(todo) - sum(len(g.keys) for g in pending))
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
            records += _prompt_verdicts(model, ws, force)
        ckpt.add_many(records)
    per_chunk = max(1, chunk // max((g.judge.samples for g in pending), default=1))
    for start in range(0, len(pending), per_chunk):
        ckpt.add_many(_sampled_verdicts(pending[start:start + per_chunk], models, force))
    return ckpt.finish(output, order, write=finish)


def _prompt_verdicts(model, ws: list[tuple[Any, Judge, GenRequest, dict]], force: bool) -> list[dict]:
    """One verdict record per (key, prompt judge, request, base record) of `ws`, all for `model`: the base
    record with the label read from the judge's answer (module docstring), P(YES), the critique."""
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
    return [{**w[3], "label": labels[i], "label_from": sources[i],
             "p_yes": None if p_yes[i] is None else round(p_yes[i], 6),
             "forced": forced[i], "critique": critique_of(raws[i]), "raw": raws[i],
             "finish_reason": g.finish_reason, "completion_tokens": g.completion_tokens,
             "cached": g.cached} for i, (w, g) in enumerate(zip(ws, gens))]


def judge_prompt(j: Judge, question: dict, text: str, criteria: list[dict]) -> str:
    """A prompt judge's user message on `text`: its template on one criterion (criteria[0]), or a holistic
    judge's on all of them (the question's criteria, numbered). The one rendering of a judge's prompt: the
    judging and the judge's training examples (judgeflow.refining.self_play) share it."""
    if j.holistic:
        if j.holistic_template is None:
            raise ValueError(f"judge {j.judge_id}: a holistic judge needs its holistic_template")
        return j.holistic_template.format(question=question["prompt"], response=text,
                                          criteria=format_criteria(criteria))
    if j.template is None:
        raise ValueError(f"judge {j.judge_id}: a prompt judge needs a template")
    return j.template.format(question=question["prompt"], response=text, criterion=criteria[0]["description"])


def format_criteria(criteria: list[dict]) -> str:
    """{criteria} of a holistic judge's template: the descriptions as a numbered list."""
    return "\n".join(f"{n}. {c['description']}" for n, c in enumerate(criteria, start=1))


@dataclass
class _Group:
    """One sampled judge's samples on one item and unit: a criterion, or (holistic) all of the item's."""
    judge: Judge
    item: dict
    criteria: list[dict]
    unit: str  # the criterion id, or HOLISTIC: part of every draw's seed
    prompt: str
    keys: list[tuple]

    @classmethod
    def of(cls, j: Judge, item: dict, q: dict, criteria: list[dict]) -> _Group:
        unit = HOLISTIC if j.holistic else criteria[0]["criterion_id"]
        prompt = judge_prompt(j, q, item["text"], criteria)
        keys = [verdict_key(cls.base(j, item, c, s)) for c in criteria for s in range(1, j.samples + 1)]
        return cls(j, item, criteria, unit, prompt, keys)

    @staticmethod
    def base(j: Judge, item: dict, c: dict, s: int) -> dict:
        return {"question_id": item["question_id"], "response_id": item.get("response_id"),
                "refinement_id": item.get("refinement_id"), "criterion_id": c["criterion_id"],
                "judge_id": sample_verdict_id(j.judge_id, s, j.samples), "model": j.model}

    def done(self, ckpt: Checkpoint) -> bool:
        return all(k in ckpt for k in self.keys)

    def request(self, s: int, draw: int) -> GenRequest:
        """Sample s's draw `draw` (0: the first; then each redraw)."""
        j = self.judge
        return GenRequest.chat(self.prompt, sampling=j.sampling, score_after=VERDICT_PREFIX,
                               prefix=VERDICT_PREFIX if j.answer_first else "",
                               seed=stable_seed(j.seed, self.item["item_id"], self.unit, s, draw))


def _sampled_verdicts(groups: list[_Group], models: dict, force: bool) -> list[dict]:
    """SPaR's mode: draw every sample of every group, then redraw (`to_redraw`: all of a tied group, or the
    abstaining samples) at most `max_resamples` times per group, batched across groups by model; one record
    per (item, criterion, sample), a holistic judgment's on each of the item's criteria."""
    drawn: dict[tuple[int, int], dict] = {}  # (group, sample) -> its latest verdict (label fields)
    draws: dict[tuple[int, int], int] = defaultdict(int)  # (group, sample) -> its redraws so far
    rounds = [0] * len(groups)  # redraw rounds per group
    exhausted = [False] * len(groups)
    pending = [(gi, s) for gi, g in enumerate(groups) for s in range(1, g.judge.samples + 1)]
    while pending:
        by_model = defaultdict(list)
        for gi, s in pending:
            by_model[groups[gi].judge.model].append((gi, s))
        for name, todo in by_model.items():
            ws: list[tuple[Any, Judge, GenRequest, dict]] = [
                ((gi, s), groups[gi].judge, groups[gi].request(s, draws[(gi, s)]), {}) for gi, s in todo]
            drawn.update(zip(todo, _prompt_verdicts(models[name], ws, force)))
        touched = sorted({gi for gi, _ in pending})
        pending = []
        for gi in touched:
            g = groups[gi]
            redo = to_redraw([drawn[(gi, s)]["label"] for s in range(1, g.judge.samples + 1)], g.judge.resample)
            if not redo:
                continue
            if rounds[gi] >= g.judge.max_resamples:
                exhausted[gi] = True
                continue
            rounds[gi] += 1
            for i in redo:
                draws[(gi, i + 1)] += 1
                pending.append((gi, i + 1))
    out = []
    for gi, g in enumerate(groups):
        j = g.judge
        for c in g.criteria:
            for s in range(1, j.samples + 1):
                out.append({**_Group.base(j, g.item, c, s), **drawn[(gi, s)], "sample_of": j.judge_id, "sample": s,
                            "resamples": draws[(gi, s)], "holistic": j.holistic, "exhausted": exhausted[gi]})
    return out


def aggregate(verdicts: list[dict], items: list[dict], questions: dict[str, dict],
              judging: Judging) -> list[dict]:
    """k-of-J per criterion and overall, one record per item.

    A criterion is accepted when at least k of its J verdicts say YES (abstains are not YES; J counts a
    sampled judge's samples, `verdicts.n_verdicts`). An item is accepted when all its criteria are.
    `value`: the share of YES per criterion and over all the item's verdicts, abstains dropped or counted
    as NO by `judging.abstain` (`verdicts.yes_share`; the tree search's node value is the item's).
    """
    k = judging.k
    n_judges = n_verdicts(judging)
    mode = abstain_mode(judging)
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
        labels: list[str] = []
        for c in criteria_for(questions[item["question_id"]], judging):
            n = counts[(item.get("response_id"), item.get("refinement_id"), c["criterion_id"])]
            mine = [lab for lab in (YES, NO, ABSTAIN) for _ in range(n[lab])]
            labels += mine
            per[c["criterion_id"]] = {**n, "accepted": n[YES] >= k, "value": yes_share(mine, mode)}
        failed = [cid for cid, n in per.items() if not n["accepted"]]
        out.append({"item_id": item["item_id"], "question_id": item["question_id"],
                    "response_id": item.get("response_id"), "refinement_id": item.get("refinement_id"),
                    "k": k, "J": n_judges, "criteria": per, "failed": failed, "accepted": not failed,
                    "value": yes_share(labels, mode)})
    return out
