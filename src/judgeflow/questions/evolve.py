"""SPaR's instruction evolution: the oracle adds constraints to each seed question (evolve_questions).

After thu-coai/SPaR at 6497aba, src/instruction_evolve.py: per seed prompt, one "main constraint" type is
drawn at random from a taxonomy of constraint types (`evolution.main_constraints`, SPaR's 14 by default),
and the oracle is asked to refine the prompt into an instruction-following task that includes the main
constraint (unless it contradicts the prompt) and `min_constraints`~`max_constraints` other constraints
(SPaR: 1~3), answering `[[start]]<refined prompt>[[end]]`, or "None" as the refined prompt for a
mathematics or coding problem. The packaged template (judgeflow/prompts/evolve.txt) is SPaR's wording, and
asks besides for the list of the constraints it added (SPaR's judge reads the whole prompt; judgeflow's
judges take one criterion at a time): those become the evolved question's criteria.

Here the draw is seeded by `evolution.seed` and the question id (the same main constraint for a question
whatever the others), and so is each request. An evolved question is a question record of its own
(judgeflow.questions.sources): `question_id` `<seed id>-evolved`, the refined prompt, the criteria (the
seed's own first, with `keep_seed_criteria`, then one per added constraint, kind `evolved`),
`seed_question_id` linking it to its seed, and with `keep_seed_criteria` the rest of the seed's record (its
verifiable instructions). An answer that cannot be used (no `[[start]]...[[end]]` block,
"None", a prompt unchanged, too few or too many constraints, cut at max_new_tokens) is a failure with its
reason (`evolve_failed.jsonl`, counted in the summary by kind), never dropped silently.

Resuming: each answer goes to a checkpoint beside the output (judgeflow.workflow.io.Checkpoint, bound to
the job's settings, code and inputs) every `checkpoint_every` questions, and every API answer to the API
cache as it comes: a killed job resumes where it stopped and pays for nothing twice.
"""
from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from judgeflow.errors import InputError
from judgeflow.generation.prompting import load_template, stable_seed
from judgeflow.models import GenRequest, Sampling
from judgeflow.workflow.io import Checkpoint, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Evolution

log = logging.getLogger(__name__)

EVOLVED_SUFFIX = "-evolved"      # an evolved question's id: its seed's and this
CRITERION_PREFIX = "evolved:"    # an added constraint's criterion id: this and its number from 1
KIND = "evolved"                 # an added constraint's criterion kind
# SPaR's answer: the refined prompt between these marks (src/instruction_evolve.py, its output format)
BLOCK = re.compile(r"\[\[start\]\](.*?)\[\[end\]\]", re.DOTALL)
BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+(.*\S)\s*$")
DECLINED = re.compile(r"^\W*none\W*$", re.IGNORECASE)  # SPaR's answer for a mathematics or coding problem


class Unusable(ValueError):
    """An answer the evolution cannot use: `kind` (counted in the summary) and the reason."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Parsed:
    instruction: str          # the evolved question's prompt
    constraints: list[str]    # the constraints the oracle says it added, in its order


def main_constraint(evolution: Evolution, question_id: str) -> str:
    """The main constraint type of a question: drawn from `evolution.main_constraints`, seeded by
    `evolution.seed` and the question id alone (SPaR: random.choice per prompt)."""
    choices = list(evolution.main_constraints)
    return random.Random(stable_seed(evolution.seed, "evolve-main", question_id)).choice(choices)


def request_seed(evolution: Evolution, question_id: str) -> int:
    return stable_seed(evolution.seed, "evolve", question_id)


def evolution_request(template: str, evolution: Evolution, question: dict) -> GenRequest:
    """The request that asks the oracle to evolve one seed question."""
    qid = question["question_id"]
    text = template.format(instruction=question["prompt"], main_constraint=main_constraint(evolution, qid),
                           min_constraints=evolution.min_constraints, max_constraints=evolution.max_constraints)
    return GenRequest.chat(text, system=evolution.system_prompt,
                           sampling=Sampling(evolution.max_new_tokens, evolution.temperature, 1.0),
                           seed=request_seed(evolution, qid))


def parse_evolution(text: str, min_constraints: int, max_constraints: int, seed_prompt: str | None = None,
                    finish_reason: str = "stop") -> Parsed:
    """The evolved instruction and the constraints listed after it, from the oracle's answer; `Unusable`
    (its kind and reason) where the answer cannot be used. `max_constraints` counts the other constraints:
    the main one comes on top (SPaR: the main one and 1~3 others), so between `min_constraints` and
    `max_constraints` + 1 constraints are listed."""
    if not text.strip():
        raise Unusable("empty", "the oracle's answer is empty")
    blocks = [m.group(1).strip() for m in BLOCK.finditer(text)]
    if not blocks:
        if finish_reason == "length":
            raise Unusable("truncated", "the answer was cut at evolution.max_new_tokens before its [[end]] mark "
                                        "(raise evolution.max_new_tokens)")
        raise Unusable("format", "no refined prompt between [[start]] and [[end]] in the answer")
    instruction = blocks[-1]  # the last block: an answer that first echoes the prompt given ends with its own
    if not instruction:
        raise Unusable("format", "the refined prompt between [[start]] and [[end]] is empty")
    if DECLINED.match(instruction):
        raise Unusable("declined", "the oracle answered 'None' (SPaR's answer for a mathematics or coding "
                                   "problem: nothing to evolve)")
    if seed_prompt is not None and _norm(instruction) == _norm(seed_prompt):
        raise Unusable("unchanged", "the refined prompt is the seed prompt itself: no constraint was added")
    after = text[text.rfind("[[end]]") + len("[[end]]"):]
    constraints = [m.group(1).strip() for line in after.splitlines() if (m := BULLET.match(line))]
    if finish_reason == "length":
        raise Unusable("truncated", f"the answer was cut at evolution.max_new_tokens within its list of "
                                    f"constraints ({len(constraints)} listed; raise evolution.max_new_tokens)")
    low, high = min_constraints, max_constraints + 1
    if not low <= len(constraints) <= high:
        listed = "no constraint" if not constraints else f"{len(constraints)} constraint(s)"
        raise Unusable("constraints", f"{listed} listed after the refined prompt; expected {low} to {high} (the "
                                      f"main one and {min_constraints} to {max_constraints} others), one a line "
                                      "starting with '- '")
    seen: dict[str, int] = {}
    for i, c in enumerate(constraints):
        if _norm(c) in seen:
            raise Unusable("constraints", f"constraint {i + 1} repeats constraint {seen[_norm(c)] + 1}: {c!r}")
        seen[_norm(c)] = i
    return Parsed(instruction, constraints)


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def evolved_record(seed: dict, parsed: Parsed, main: str, keep_seed_criteria: bool, answer: dict) -> dict:
    """The evolved question: a question record of its own, linked to its seed (`seed_question_id`)."""
    qid = seed["question_id"]
    added = [{"criterion_id": f"{CRITERION_PREFIX}{i}", "description": c, "kind": KIND}
             for i, c in enumerate(parsed.constraints, 1)]
    own = list(seed.get("criteria") or []) if keep_seed_criteria else []
    clash = {c["criterion_id"] for c in own} & {c["criterion_id"] for c in added}
    if clash:
        raise InputError(f"question '{qid}': its criterion id(s) {sorted(clash)} are those evolve_questions gives "
                         f"the added constraints ('{CRITERION_PREFIX}<n>'); rename them, or set "
                         "evolution.keep_seed_criteria: false")
    # with the seed's criteria, the rest of its record too (its verifiable instructions, its marks); without,
    # its source alone
    base = dict(seed) if keep_seed_criteria else {"source": seed.get("source")}
    rec = {**base, "question_id": f"{qid}{EVOLVED_SUFFIX}", "prompt": parsed.instruction, "criteria": own + added}
    rec["seed_question_id"] = qid
    rec["seed_prompt"] = seed["prompt"]
    rec["evolution"] = {"main_constraint": main, "constraints": parsed.constraints, **_answer_fields(answer)}
    return rec


def _answer_fields(answer: dict) -> dict:
    return {k: answer.get(k) for k in ("model", "raw", "finish_reason", "cached")}


def checkpoint_of(output: str | Path) -> Path:
    """The checkpoint file beside an output (judgeflow.workflow.io.Checkpoint's)."""
    output = Path(output)
    return output.with_name(f".{output.name}.checkpoint")


def evolve_questions(questions_path: str, evolved_path: str, failed_path: str, evolution: Evolution, models: dict,
                     chunk: int | None = None) -> dict:
    """Evolve every seed question of `questions_path` with the oracle `models[evolution.model]`; write the
    evolved questions to `evolved_path` and the failures (seed id, kind, reason, the answer) to
    `failed_path`; return the summary. `chunk`: questions asked per checkpointed batch (None: all at
    once, as one Batch API batch)."""
    seeds = read_jsonl(questions_path, required=("question_id", "prompt"))
    ids = [q["question_id"] for q in seeds]
    if len(set(ids)) != len(ids):
        dup = next(q for i, q in enumerate(ids) if q in ids[:i])
        raise InputError(f"{questions_path}: duplicate question_id '{dup}'")
    failures: dict[str, dict] = {}
    to_ask = []
    for q in seeds:
        if not q["prompt"].strip():
            failures[q["question_id"]] = {"kind": "empty_prompt", "reason": "empty prompt (not sent to the oracle)"}
        else:
            to_ask.append(q)
    ckpt = Checkpoint(evolved_path, key="question_id")
    todo = [q for q in to_ask if q["question_id"] not in ckpt]
    reused = len(to_ask) - len(todo)
    log.info("evolution: %d question(s) to ask, %d from the checkpoint, %d not sent", len(todo), reused,
             len(failures))
    if todo:
        template = load_template(evolution.template, {"instruction", "main_constraint", "min_constraints",
                                                      "max_constraints"}, "evolution.template")
        oracle = models[evolution.model]
        step = chunk or len(todo)
        for start in range(0, len(todo), step):
            part = todo[start:start + step]
            gens = oracle.generate([evolution_request(template, evolution, q) for q in part], desc="evolve")
            ckpt.add_many({"question_id": q["question_id"], "model": evolution.model, "raw": g.text,
                           "finish_reason": g.finish_reason, "unusable": g.unusable, "cached": g.cached,
                           "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens}
                          for q, g in zip(part, gens))
    answers = {a["question_id"]: a for a in ckpt.finish(evolved_path, [q["question_id"] for q in to_ask],
                                                          write=False)}
    evolved: list[dict] = []
    n_constraints: Counter[int] = Counter()
    for q in to_ask:
        qid, answer = q["question_id"], answers[q["question_id"]]
        main = main_constraint(evolution, qid)
        try:
            parsed = parse_evolution(answer["raw"], evolution.min_constraints, evolution.max_constraints,
                                     q["prompt"], answer["finish_reason"])
        except Unusable as e:
            failures[qid] = {"kind": e.kind, "reason": e.reason, "main_constraint": main, **_answer_fields(answer)}
            continue
        evolved.append(evolved_record(q, parsed, main, evolution.keep_seed_criteria, answer))
        n_constraints[len(parsed.constraints)] += 1
    failed = [{"question_id": qid, **failures[qid]} for qid in ids if qid in failures]
    write_jsonl(evolved_path, evolved)
    write_jsonl(failed_path, failed)
    checkpoint_of(evolved_path).unlink(missing_ok=True)
    summary = {"seeds": len(seeds), "evolved": len(evolved), "failed": len(failed),
               "failures": dict(sorted(Counter(f["kind"] for f in failed).items())),
               "constraints": {str(k): n for k, n in sorted(n_constraints.items())},
               "asked_this_run": len(todo), "from_checkpoint": reused,
               "cached": sum(1 for q in todo if answers[q["question_id"]]["cached"]),
               "model": evolution.model}
    for f in failed[:5]:
        log.warning("evolution failed for %s (%s): %s", f["question_id"], f["kind"], f["reason"])
    log.info("evolution: %s", summary)
    return summary
