"""Exact programmatic verdicts from the IFBench checkers (PyPI `if-verifiable`).

A question is verifiable when all its criteria are instructions from the IFBench registry
(`kind: instruction`, as `prepare_questions` writes them for the IFBench source). The verdict
is the strict one of IFBench's own evaluation: an empty response fails every instruction.
"""
from __future__ import annotations

import random

from .prompting import stable_seed


def _registry():
    from if_verifiable.ifbench.instructions_registry import INSTRUCTION_DICT

    return INSTRUCTION_DICT


def instruction_criteria(question: dict) -> list[dict]:
    return [c for c in question.get("criteria", []) if c.get("kind") == "instruction"]


def is_verifiable(question: dict) -> bool:
    crits = question.get("criteria", [])
    return bool(crits) and all(c.get("kind") == "instruction" for c in crits)


def verify(question: dict, response: str) -> dict | None:
    """{criterion_id: bool} per instruction plus "all"; None when the question is not verifiable.

    A checker that cannot run (its NLTK data missing) gives "all": None and "error": an abstain
    for the oracle, never a guessed label."""
    from if_verifiable.common import evaluate_instructions

    crits = instruction_criteria(question)
    if not crits or not is_verifiable(question):
        return None
    state = random.getstate()
    random.seed(stable_seed("verify", question["question_id"]))  # some checkers draw defaults at random
    try:
        results, _ = evaluate_instructions(response, [c["instruction_id"] for c in crits],
                                           [dict(c.get("kwargs") or {}) for c in crits],
                                           question["prompt"], _registry())
    except LookupError as e:  # NLTK data missing (make install builds it into .venv/share/nltk_data)
        return {"criteria": {}, "all": None, "error": f"checker data missing: {str(e).strip().splitlines()[0]}"}
    finally:
        random.setstate(state)
    passed = {r.instruction_id: r.strict_pass for r in results}
    per = {c["criterion_id"]: bool(passed.get(c["instruction_id"], False)) for c in crits}
    return {"criteria": per, "all": all(per.values())}
