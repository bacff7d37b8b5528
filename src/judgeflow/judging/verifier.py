"""Exact programmatic verdicts from the IFBench and IFEval checkers (PyPI `if-verifiable`).

A question is verifiable when all its criteria are instructions of one registry (`kind:
instruction`, as `prepare_questions` writes them for the IFBench and the composed sources). The
verdict is the strict one of IFBench's own evaluation: an empty response fails every instruction.
"""
from __future__ import annotations

import random

from judgeflow.generation.prompting import stable_seed

REGISTRIES = ("ifbench", "ifeval")  # the checkers of if-verifiable: IFBench's and IFEval's


def registry_of(name: str) -> dict:
    """{instruction id: checker class} of one of the REGISTRIES."""
    if name == "ifeval":
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    elif name == "ifbench":
        from if_verifiable.ifbench.instructions_registry import INSTRUCTION_DICT
    else:
        raise ValueError(f"unknown instruction registry '{name}' (expected one of {', '.join(REGISTRIES)})")
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
    names = {c.get("registry", "ifbench") for c in crits}
    if len(names) != 1:
        return {"criteria": {}, "all": None, "error": f"instructions of several registries ({sorted(names)})"}
    state = random.getstate()
    random.seed(stable_seed("verify", question["question_id"]))  # some checkers draw defaults at random
    try:
        results, _ = evaluate_instructions(response, [c["instruction_id"] for c in crits],
                                           [dict(c.get("kwargs") or {}) for c in crits],
                                           question["prompt"], registry_of(names.pop()))
    except LookupError as e:  # NLTK data missing (make install builds it into .venv/share/nltk_data)
        return {"criteria": {}, "all": None, "error": f"checker data missing: {str(e).strip().splitlines()[0]}"}
    finally:
        random.setstate(state)
    passed = {r.instruction_id: r.strict_pass for r in results}
    per = {c["criterion_id"]: bool(passed.get(c["instruction_id"], False)) for c in crits}
    return {"criteria": per, "all": all(per.values())}


def compare(question: dict, response_a: str, response_b: str) -> tuple[str | None, str]:
    """The exact pairwise oracle: ("A" | "B" | "TIE", why) by the number of the question's instructions
    each response satisfies (more wins, equal is a tie); (None, why) when either cannot be verified."""
    va, vb = verify(question, response_a), verify(question, response_b)
    if va is None or vb is None:
        return None, "not verifiable: the question has criteria that are not instructions of a registry"
    if va["all"] is None or vb["all"] is None:
        return None, va.get("error") or vb.get("error") or "checker failed"
    a, b = sum(va["criteria"].values()), sum(vb["criteria"].values())
    n = len(va["criteria"])
    return ("A" if a > b else "B" if b > a else "TIE"), f"A satisfies {a} of {n} instructions, B {b}"
