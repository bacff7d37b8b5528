"""Real labelled responses outside the workflow (tests/test_trained_judge.py, benchmarks/trained_judge.py):
composed questions, responses sampled by a real model, the exact verifier's label of each criterion."""
from __future__ import annotations

from pathlib import Path

import yaml

from judgeflow.judging.verifier import verify
from judgeflow.models import GenRequest, Sampling
from judgeflow.questions.composed import compose
from judgeflow.questions.sources import instruction_criteria
from judgeflow.workflow.settings import Composed


def labelled_responses(model, count: int, n_responses: int, *, per_question: int = 1,
                       instructions: list[str] | None = None, max_new_tokens: int = 32,
                       temperature: float = 0.8) -> list[dict]:
    """Outside the workflow (benchmarks, tests): `count` composed questions (the demo's instructions
    unless given), `n_responses` responses to each sampled by `model` (seeds 1000 i + j), and the exact
    verifier's label of every (response, criterion): one row {question_id, prompt, criterion_id,
    instruction_id, criterion, response, x} per pair. Unverifiable responses raise ValueError."""
    if instructions is None:
        demo = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
        instructions = yaml.safe_load(demo.read_text())["questions"]["composed"]["instructions"]
    ccfg = Composed(count=count, instructions=instructions, per_question=per_question, kwargs={}, tasks=None, seed=0)
    questions = [{"question_id": row["question_id"], "prompt": row["prompt"],
                  "criteria": instruction_criteria(row["instruction_id_list"], row["kwargs"], row["question_id"],
                                                   row["registry"])} for row in compose(ccfg)]
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature)
    reqs = [GenRequest.chat(q["prompt"], sampling=sampling, seed=1000 * i + j)
            for i, q in enumerate(questions) for j in range(n_responses)]
    rows = []
    for k, gen in enumerate(model.generate(reqs, desc="labelled responses")):
        q = questions[k // n_responses]
        verdict = verify(q, gen.text)
        if verdict is None or verdict["all"] is None:
            raise ValueError(f"the verifier cannot check {q['question_id']}: {verdict}")
        for c in q["criteria"]:
            rows.append({"question_id": q["question_id"], "prompt": q["prompt"], "criterion_id": c["criterion_id"],
                         "instruction_id": c["instruction_id"], "criterion": c["description"],
                         "response": gen.text, "x": int(verdict["criteria"][c["criterion_id"]])})
    return rows
