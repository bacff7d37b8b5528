"""Bad input, table-driven, through the stage functions the workflow calls: each case ends in a
clear error naming the file and line or the config key (or, for prompts the oracle should never
see, a rejection with its reason), and nothing half-written.

Unit-level variants live in test_io.py (malformed JSON, non-objects, missing fields, non-UTF-8,
atomic writes), test_questions.py (bad rows of a question source), test_config.py (schema and
cross-field errors, missing model path, unset API key variable) and test_openai_backend.py (an
unreachable endpoint beside a real server); the cases here go through the stage entry points.
`benchmarks/faults.py --bad-input` runs this table and prints how each case ended.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from judgeflow.errors import BackendError, ConfigError, InputError

from fault_server import FaultServer, stage_config

GOOD = {"question_id": "ok", "prompt": "Name three rivers.", "criteria": ["Exactly three rivers."]}


@dataclass
class Case:
    name: str
    run: Callable[[Path, str], object]   # (tmp dir, stand-in server URL) -> raises, or returns a check's input
    error: type | None                   # the exception expected, or None: the stage succeeds
    match: str                           # regex the message must match (or the check's outcome)
    hidden: str = ""                     # a secret the message must not show


def _src(tmp: Path, lines: list, raw: bytes | None = None) -> Path:
    """A question source: `lines` (dicts as JSON, strings as they are), or `raw` bytes."""
    p = tmp / "in" / "src.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    if raw is None:
        raw = "".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines).encode()
    p.write_bytes(raw)
    return p


def _prepare(lines=None, raw=None, missing: bool = False):
    def run(tmp, url):
        from judgeflow.workflow.pipeline import run_stage

        src = tmp / "in" / "nope.jsonl" if missing else _src(tmp, lines or [], raw)
        config = stage_config(tmp, url, questions={"source": "jsonl", "path": str(src), "limit": None})
        run_stage("prepare_questions", {"source": str(src)}, {"questions": str(tmp / "out" / "questions.jsonl")},
                  config)
    return run


def _questions_file(tmp: Path, rows) -> Path:
    p = tmp / "in" / "questions.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def _clean(rows, heldout: int = 0, **cfg):
    def run(tmp, url):
        from judgeflow.workflow.pipeline import run_stage

        q = _questions_file(tmp, rows)
        extra = dict(cfg)
        config = stage_config(tmp, extra.pop("url", url), questions={"heldout": heldout}, **extra)
        out = tmp / "out"
        run_stage("clean_questions", {"questions": str(q)},
                  {name: str(out / f"{name}.jsonl") for name in ("kept", "rejected", "heldout", "calibration")}
                  | {"summary": str(out / "cleaning.json")}, config, log_dir=str(tmp / "logs"))
        return {r["question_id"]: r["cleaning"]["reason"] for r in map(json.loads, (out / "rejected.jsonl").open())}
    return run


def _config(**overrides):
    def run(tmp, url):
        stage_config(tmp, url, **overrides)
    return run


KEY = "sk-jf-" + "0f3a9c" * 6  # an API key, where a secret does not belong
CREDENTIAL = "s3cr3t-token-0123456789abcdef"


def _url_with(where: str):
    def run(tmp, url):
        bad = {"userinfo": url.replace("http://", f"http://user:{CREDENTIAL}@"),
               "query": f"{url}?api-key={CREDENTIAL}", "token": f"{url}?token={CREDENTIAL}"}[where]
        stage_config(tmp, bad)
    return run


def _yaml_syntax(tmp, url):
    from judgeflow.workflow import settings as jf_settings

    p = tmp / "in" / "config.yaml"
    p.parent.mkdir(parents=True)
    p.write_text("run: demo\nmodels: [smollm2\nseed: 1\n")
    jf_settings.load(p)


def _missing_hf_model(tmp, url):
    from judgeflow.workflow.pipeline import run_stage

    q = _questions_file(tmp, [{"question_id": "a", "prompt": "Hi?", "criteria": []}])
    config = stage_config(tmp, url, models={"smollm2": {"path": str(tmp / "no-such-model")}})
    run_stage("sample_responses", {"kept": str(q)}, {"responses": str(tmp / "out" / "shard-0.jsonl")}, config,
              wildcards={"shard": 0})


def _missing_served_model(tmp, url):
    return _clean([GOOD], cleaning={"model": "oracle"},
                  models={"oracle": {"serve": {"path": str(tmp / "no-such-model")}}})(tmp, url)


def _unreachable(tmp, url):
    from judgeflow.models.serve import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    return _clean([GOOD], url=dead, max_retries=1)(tmp, url)


def _wrong_path(tmp, url):
    return _clean([GOOD], url=url.replace("/v1", "/nope"), max_retries=1)(tmp, url)


def _unset_key(tmp, url):
    import os

    os.environ.pop("JF_UNSET_TEST_KEY", None)
    return _clean([GOOD], api_key_env="JF_UNSET_TEST_KEY")(tmp, url)


def _label_with_bad_draws(tmp, url):
    from judgeflow.workflow.pipeline import run_stage

    q = _questions_file(tmp, [{"question_id": "a", "prompt": "Hi?", "criteria": []}])
    d = tmp / "in" / "draws.jsonl"
    d.write_text(json.dumps({"draw_id": "a/d1", "question_id": "a", "text": "hi", "first_accept": True,
                             "n_accept": 1, "n_max": 4}) + "\n")  # no "draw"
    out = tmp / "out"
    config = stage_config(tmp, url)
    run_stage("label_oracle", {"kept": str(q), "draws": [str(d)]},
              {"labels": str(out / "labels.jsonl"), "nstar": str(out / "nstar.json"), "curve": str(out / "tp.csv"),
               "plot": str(out / "tp.png"), "fit": str(out / "fit.json")}, config)


HUGE = {"question_id": "huge", "prompt": "lorem ipsum " * 100_000, "criteria": []}
CASES = [
    # question sources (prepare_questions)
    Case("broken JSON line", _prepare([GOOD, {"question_id": "b", "prompt": "x"}, '{"question_id": "c", "pro']),
         InputError, r"src\.jsonl:3: malformed JSON"),
    Case("line is not an object", _prepare([GOOD, '"just a string"']), InputError,
         r"src\.jsonl:2: expected a JSON object, got str"),
    Case("missing prompt", _prepare([GOOD, {"question_id": "b"}]), InputError,
         r"src\.jsonl:2: 'prompt' must be a string, got NoneType"),
    Case("prompt of the wrong type", _prepare([{"question_id": "a", "prompt": 42}]), InputError,
         r"src\.jsonl:1: 'prompt' must be a string, got int"),
    Case("empty question id", _prepare([{"question_id": "", "prompt": "x"}]), InputError,
         r"src\.jsonl:1: 'question_id' must be a non-empty string, got ''"),
    Case("duplicate id", _prepare([GOOD, {"question_id": "b", "prompt": "y"}, {"question_id": "ok", "prompt": "z"}]),
         InputError, r"src\.jsonl:3: duplicate question_id 'ok' \(first seen at .*src\.jsonl:1\)"),
    Case("criteria not a list", _prepare([{"question_id": "a", "prompt": "x", "criteria": "be brief"}]),
         InputError, r"src\.jsonl:1: 'criteria' must be a list"),
    Case("unknown criterion (instruction id)", _prepare([{"question_id": "a", "prompt": "x",
                                                          "instruction_id_list": ["count:no_such"], "kwargs": [{}]}]),
         InputError, r"src\.jsonl:1: unknown instruction id 'count:no_such'"),
    Case("criterion kwargs that do not fit", _prepare([{"question_id": "a", "prompt": "x",
                                                        "instruction_id_list": ["count:keywords_multiple"],
                                                        "kwargs": [{"bogus": 3}]}]),
         InputError, r"src\.jsonl:1: kwargs do not fit instruction 'count:keywords_multiple'"),
    Case("instruction ids and kwargs of different lengths",
         _prepare([{"question_id": "a", "prompt": "x", "instruction_id_list": ["count:keywords_multiple"],
                    "kwargs": []}]),
         InputError, r"src\.jsonl:1: instruction_id_list and kwargs must be lists of the same length"),
    Case("non-UTF-8 bytes", _prepare(raw=json.dumps(GOOD).encode() + b'\n{"question_id": "b", "prompt": "\xff\xfe"}\n'),
         InputError, r"src\.jsonl:2: not valid UTF-8"),
    Case("empty source file", _prepare(raw=b"\n\n"), InputError,
         r"in/src\.jsonl: no questions \(questions\.source 'jsonl'\): the file is empty"),
    Case("source file missing", _prepare(missing=True), InputError, r"in/nope\.jsonl: file not found"),
    # the question file of the cleaning stage
    Case("question file line without a prompt", _clean([GOOD, {"question_id": "b"}]), InputError,
         r"questions\.jsonl:2: missing field\(s\) prompt"),
    Case("question file with a broken line", _clean([GOOD, '{"question_id": '], cleaning={"enabled": False}),
         InputError, r"questions\.jsonl:2: malformed JSON"),
    Case("more held-out questions than kept", _clean([GOOD], heldout=1, cleaning={"enabled": False}), InputError,
         r"questions\.heldout: 1 held-out questions asked for, but only 1"),
    Case("empty prompt", _clean([GOOD, {"question_id": "e", "prompt": " \n ", "criteria": []}]), None,
         "rejected: empty prompt"),
    Case("huge prompt (1.2 MB)", _clean([GOOD, HUGE]), None,
         "rejected: prompt has 1200000 characters, over questions.max_prompt_chars=20000"),
    # configuration
    Case("config not valid YAML", _yaml_syntax, yaml.YAMLError, r'config\.yaml", line 3, column 5'),
    Case("invalid enum value", _config(cleaning={"on_abstain": "maybe"}), ConfigError,
         r"config key cleaning\.on_abstain: Input should be 'keep' or 'reject' \(got 'maybe'\)"),
    Case("timeout of zero", _config(models={"flaky": {"timeout": 0}}), ConfigError,
         r"config key models\.flaky\.timeout: Input should be greater than 0 \(got 0\)"),
    Case("max_concurrency as a word", _config(models={"flaky": {"max_concurrency": "eight"}}), ConfigError,
         r"config key models\.flaky\.max_concurrency: Input should be a valid integer.* \(got 'eight'\)"),
    Case("negative max_retries", _config(models={"flaky": {"max_retries": -1}}), ConfigError,
         r"config key models\.flaky\.max_retries: Input should be greater than or equal to 0 \(got -1\)"),
    Case("oracle that is not a model", _config(oracle={"labeller": "gpt9"}), ConfigError,
         r"oracle\.labeller: 'gpt9' is neither 'verifier' nor a model"),
    Case("a typo in a one-or-list setting", _config(refining={"strategy": "tree_serach"}), ConfigError,
         r"^config key refining\.strategy: Input should be 'single' or 'tree_search' \(got 'tree_serach'\); "
         r"did you mean 'tree_search'\?$"),
    Case("the API key as the value of api_key_env", _config(models={"flaky": {"api_key_env": KEY}}), ConfigError,
         r"^models\.flaky\.api_key_env: expected the NAME of the environment variable", hidden=KEY),
    Case("a password in base_url", _url_with("userinfo"), ConfigError,
         r"^models\.flaky\.base_url: the URL holds a credential \(a user name and password", hidden=CREDENTIAL),
    Case("an api-key parameter in base_url", _url_with("query"), ConfigError,
         r"^models\.flaky\.base_url: the URL holds a credential \(the query parameter 'api-key'", hidden=CREDENTIAL),
    Case("a token parameter in base_url", _url_with("token"), ConfigError,
         r"^models\.flaky\.base_url: the URL holds a credential \(the query parameter 'token'", hidden=CREDENTIAL),
    # models and endpoints
    Case("missing model files (hf)", _missing_hf_model, ConfigError, r"models\.smollm2\.path: no model at"),
    Case("missing model files (served)", _missing_served_model, ConfigError,
         r"models\.oracle\.serve\.path: no model at"),
    Case("API key variable unset", _unset_key, ConfigError,
         r"models\.flaky\.api_key_env: environment variable JF_UNSET_TEST_KEY is not set"),
    Case("unreachable endpoint", _unreachable, BackendError,
         r"^http://127\.0\.0\.1:\d+/v1: cannot connect after 1 retries"),
    Case("endpoint at a wrong path", _wrong_path, BackendError,
         r"^http://127\.0\.0\.1:\d+/nope: HTTP 404 from model standin not retried"),
    # draws for the oracle
    Case("draw record without its index", _label_with_bad_draws, InputError, r"draws\.jsonl:1: missing field"),
]


def try_case(case: Case, tmp: Path, url: str) -> str:
    """Run one case; return how it ended ("error: ..." / "rejected: ..."), or raise AssertionError."""
    import re

    tmp.mkdir(parents=True, exist_ok=True)
    try:
        result = case.run(tmp, url)
    except Exception as e:  # noqa: BLE001 - the point is to see what comes out
        msg = str(e)
        assert case.error is not None and isinstance(e, case.error), f"{type(e).__name__}: {msg}"
        assert re.search(case.match, msg), f"{msg!r} does not match {case.match!r}"
        assert not case.hidden or case.hidden not in msg, f"{msg!r} shows the secret"
        outcome = f"{type(e).__name__}: {' / '.join(l.strip() for l in msg.splitlines())}"
        # nothing half-written: no output, no temporary file, no checkpoint, no cache entry
        written = [p for p in (tmp / "out").rglob("*") if p.is_file()] if (tmp / "out").exists() else []
        cached = [p for p in (tmp / "cache").rglob("*") if p.is_file()] if (tmp / "cache").exists() else []
        assert not written and not cached, (written, cached)
        return outcome
    assert case.error is None, f"no error; expected {case.error.__name__} matching {case.match!r}"
    kind, _, reason = case.match.partition(": ")
    assert kind == "rejected" and reason in result.values(), result
    return case.match


@pytest.fixture(scope="module")
def standin():
    with FaultServer() as fs:
        yield fs


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tmp_path, standin):
    before = standin.summary()["upstream_calls"]
    try_case(case, tmp_path, standin.url)
    if case.error is not None:
        assert standin.summary()["upstream_calls"] == before  # nothing paid for a failed input


def test_the_table_is_big_enough():
    assert len(CASES) >= 15 and len({c.name for c in CASES}) == len(CASES)
