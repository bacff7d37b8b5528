"""Composed questions: short base tasks, each with IFEval constraints that exact checkers verify.

Like Tulu 3's verifiable-constraint prompts: a task ("Describe a cat to someone who has never seen
one.") followed by one or more instructions from the IFEval registry of the installed
`if-verifiable` ("Your entire response should be in English, and in all lowercase letters."),
their kwargs drawn with a seed (or fixed in the config). The checker of each instruction is the
exact ground truth of its criterion.

    questions:
      source: composed
      composed: {count: 60, instructions: [change_case:english_lowercase, punctuation], per_question: 1}

An entry of `instructions` is an instruction id (`punctuation:no_comma`) or a family, the part
before the colon (`punctuation`: every instruction of that family that a short answer can meet).
"""
from __future__ import annotations

import ast
import importlib.util
import itertools
import random
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judgeflow.errors import ConfigError
from judgeflow.generation.prompting import stable_seed

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Composed

REGISTRY = "ifeval"
# never taken in by a family (an id named alone still is): they need the prompt itself, another
# language, or two whole answers, which the short tasks here do not make sense for
NOT_IN_FAMILIES = {"combination:repeat_prompt", "combination:two_responses", "language:response_language",
                   "length_constraints:nth_paragraph_first_word", "detectable_format:constrained_response"}


@cache
def instruction_ids() -> tuple[str, ...]:
    """The IFEval instruction ids of the installed if-verifiable, read from its registry's source
    (no import: importing the checkers takes seconds, and the config is checked on every parse)."""
    spec = importlib.util.find_spec("if_verifiable")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("questions.source: 'composed' needs the PyPI package if-verifiable (make install)")
    path = Path(next(iter(spec.submodule_search_locations)), "ifeval", "instructions_registry.py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: dict[str, Any] = {}  # the module's constants (the "keywords:" ... prefixes)
    ids: list[str] = []
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        # the registry assigns plain names only: `_KEYWORD = "keywords:"`, `INSTRUCTION_DICT = {...}`
        target = node.targets[0]
        assert isinstance(target, ast.Name), f"{path}:{node.lineno}: not an assignment to a name"
        if isinstance(node.value, ast.Constant) and len(node.targets) == 1:
            names[target.id] = node.value.value
        if target.id == "INSTRUCTION_DICT":
            assert isinstance(node.value, ast.Dict), f"{path}:{node.lineno}: INSTRUCTION_DICT is not a dict"
            for key in node.value.keys:
                if isinstance(key, ast.BinOp):  # _PREFIX + "name"
                    assert isinstance(key.left, ast.Name) and isinstance(key.right, ast.Constant)
                    ids.append(names[key.left.id] + key.right.value)
    return tuple(ids)


def expand(entries: list[str], key: str = "questions.composed.instructions") -> list[str]:
    """Instruction ids of the `instructions` entries (families expanded), in order, each once."""
    import difflib

    known = instruction_ids()
    families = sorted({i.split(":")[0] for i in known})
    out: list[str] = []
    for n, entry in enumerate(entries):
        if entry in known:
            found = [entry]
        elif entry in families:
            found = [i for i in known if i.split(":")[0] == entry and i not in NOT_IN_FAMILIES]
        else:
            near = difflib.get_close_matches(entry, list(known) + families, n=1, cutoff=0.6)
            raise ConfigError(f"{key}[{n}]: unknown instruction or family '{entry}'"
                              + (f" (did you mean '{near[0]}'?)" if near else "")
                              + f"; families: {', '.join(families)}")
        out += [i for i in found if i not in out]
    return out


def tasks_file(path: str | None) -> Path:
    """The base tasks' file: the given one, or the packaged list."""
    return Path(path) if path else Path(str(resources.files("judgeflow").joinpath("data", "base_tasks.txt")))


def base_tasks(path: str | None) -> list[str]:
    """The base tasks: a text file, one per line ('#' starts a comment), or the packaged list."""
    try:
        text = tasks_file(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"questions.composed.tasks: no file '{path}'") from None
    tasks = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not tasks:
        raise ConfigError(f"questions.composed.tasks: no task in {path or 'the packaged list'}")
    return tasks


def constraint_sets(ids: list[str], per_question: int) -> list[tuple[str, ...]]:
    """Every set of `per_question` instructions that do not conflict (IFEval's own conflict table)."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    def clash(a: str, b: str) -> bool:
        return b in INSTRUCTION_CONFLICTS.get(a, ()) or a in INSTRUCTION_CONFLICTS.get(b, ())

    return [c for c in itertools.combinations(ids, per_question)
            if not any(clash(a, b) for a, b in itertools.combinations(c, 2))]


def describe(iid: str, kwargs: dict | None, seed: int, key: str) -> tuple[str, dict]:
    """(the instruction's text, its kwargs): `kwargs` as given, or drawn by the checker with `seed`."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    checker = INSTRUCTION_DICT[iid](iid)
    state = random.getstate()
    random.seed(seed)  # the checkers draw what is not given at random
    try:
        text = checker.build_description(**(kwargs or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: the checker of '{iid}' refuses these kwargs ({e})") from None
    finally:
        random.setstate(state)
    args = {k: v for k, v in (checker.get_instruction_args() or {}).items() if v is not None}
    return text, args


def compose(composed: Composed) -> list[dict]:
    """The composed question rows (question_id, prompt, instruction_id_list, kwargs, registry).

    `per_question` a list (e.g. [1, 2]): the count is split evenly between the sizes (the first sizes
    take the remainder), each size composed as on its own."""
    per_question = composed.per_question
    sizes = per_question if isinstance(per_question, list) else [per_question]
    rows = []
    for i, size in enumerate(sizes):
        count = composed.count // len(sizes) + (1 if i < composed.count % len(sizes) else 0)
        salt = ("composed",) if len(sizes) == 1 else ("composed", size)
        rows += _compose_size(composed, size, count, salt)
    return rows


def _compose_size(composed: Composed, size: int, count: int, salt: tuple) -> list[dict]:
    tasks = base_tasks(composed.tasks)
    ids = expand(composed.instructions)
    sets = constraint_sets(ids, size)
    capacity = len(tasks) * len(sets)
    if count > capacity:
        raise ConfigError(f"questions.composed.count: {count} questions of {size} instruction(s) asked for, but "
                          f"this source can compose at most {capacity} ({len(tasks)} tasks x {len(sets)} sets of "
                          f"{size} instruction(s) from {len(ids)}); lower the count or add instructions or tasks")
    fixed = composed.kwargs  # a map: instruction id -> its kwargs
    for iid in fixed:
        if iid not in ids:
            raise ConfigError(f"questions.composed.kwargs.{iid}: '{iid}' is not among the composed instructions")
    # every instruction set equally often, each with tasks in a seeded order
    rng = random.Random(stable_seed(composed.seed, *salt))
    order = [(t, s) for s in range(len(sets)) for t in rng.sample(range(len(tasks)), len(tasks))]
    picks = sorted(order[i] for i in _spread(len(tasks), len(sets), count))
    rows = []
    for t, s in picks:
        qid = f"c{t:02d}-" + "+".join(sets[s])
        texts, kwargs = [], []
        for iid in sets[s]:
            text, args = describe(iid, fixed.get(iid), stable_seed(composed.seed, qid, iid),
                                  f"questions.composed.kwargs.{iid}")
            texts.append(text)
            kwargs.append(args)
        rows.append({"question_id": qid, "prompt": f"{tasks[t]} " + " ".join(texts),
                     "instruction_id_list": list(sets[s]), "kwargs": kwargs, "registry": REGISTRY})
    return rows


def _spread(n_tasks: int, n_sets: int, count: int) -> list[int]:
    """Indices into the (set-major) order that take each set about count / n_sets times."""
    per = [count // n_sets + (1 if s < count % n_sets else 0) for s in range(n_sets)]
    return [s * n_tasks + j for s in range(n_sets) for j in range(per[s])]
