"""SPaR's instruction evolution (evolution.*, evolve_questions; judgeflow.questions.evolve): the answer's
parsing, good and bad; the seeded draws; bad settings named by their key before any job; the stage against
the local fault server (tests/fault_server.py) standing in for the oracle, which counts what it is paid for:
the calls, the evolved questions, a rerun that pays nothing, a run stopped midway that resumes from its
checkpoint and pays only for the rest; and the DAG: enabling evolution adds exactly the evolve job, upstream
of clean_questions."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest

from judgeflow.errors import BudgetReached, ConfigError, InputError
from judgeflow.generation.prompting import load_template
from judgeflow.models import ledger as jl
from judgeflow.models.openai_api import OpenAIModel
from judgeflow.questions import evolve as ev
from judgeflow.workflow import pipeline, settings as st
from judgeflow.workflow.io import read_jsonl
from judgeflow.workflow.pipeline import STAGES, run_stage
from judgeflow.workflow.rulekit import Rules

from fault_server import FaultServer, stage_config
from project import ROOT, planned_jobs, smk, tiny_config

EVOLVE_FIELDS = {"instruction", "main_constraint", "min_constraints", "max_constraints"}
GOOD = ("[[start]]Write a haiku about autumn in English, all in lowercase letters, and end it with the word "
        "'leaves'.[[end]]\nConstraints:\n- The response is written in lowercase letters only.\n"
        "- The response ends with the word 'leaves'.\n")


def _evolution(**kw) -> st.Evolution:
    return st.Evolution(**kw)


# ------------------------------------------------------------------------------------------- parsing


def test_a_good_answer_gives_the_evolved_instruction_and_its_constraints():
    p = ev.parse_evolution(GOOD, 1, 3, seed_prompt="Write a haiku about autumn.")
    assert p.instruction.startswith("Write a haiku about autumn in English") and p.instruction.endswith("'leaves'.")
    assert p.constraints == ["The response is written in lowercase letters only.",
                             "The response ends with the word 'leaves'."]
    # numbered items, stars, a header, surrounding prose; an answer that echoes the prompt given first
    numbered = ("Here it is.\n[[start]]Old prompt[[end]]\n[[start]]New prompt, in three sentences.[[end]]\n"
                "Added constraints:\n1. Exactly three sentences.\n2) No commas.\n* A title in double angle "
                "brackets.\nThat is all.")
    p = ev.parse_evolution(numbered, 1, 3, seed_prompt="Old prompt")
    assert p.instruction == "New prompt, in three sentences."
    assert p.constraints == ["Exactly three sentences.", "No commas.", "A title in double angle brackets."]
    # the main one and max_constraints others: max_constraints + 1 in all
    four = "[[start]]X, more specific[[end]]\n" + "".join(f"- constraint {i}\n" for i in range(4))
    assert len(ev.parse_evolution(four, 1, 3, seed_prompt="X").constraints) == 4


@pytest.mark.parametrize("answer, finish, kind, reason", [
    ("", "stop", "empty", r"empty"),
    ("   \n", "stop", "empty", r"empty"),
    ("Write a haiku about autumn, in lowercase.\n- lowercase", "stop", "format", r"no refined prompt between"),
    ("[[start]]  [[end]]\n- one", "stop", "format", r"refined prompt .* is empty"),
    ("[[start]]None[[end]]", "stop", "declined", r"'None' \(SPaR's answer for a mathematics or coding problem"),
    ("[[start]]\"None.\"[[end]]\n- x", "stop", "declined", r"None"),
    ("[[start]]write a haiku  about autumn.[[end]]\n- lowercase", "stop", "unchanged", r"seed prompt itself"),
    ("[[start]]A haiku, lowercase.[[end]]\nI made it lowercase.", "stop", "constraints",
     r"no constraint listed .* expected 1 to 4 \(the main one and 1 to 3 others\)"),
    ("[[start]]A haiku, lowercase.[[end]]\n" + "".join(f"- c{i}\n" for i in range(5)), "stop", "constraints",
     r"5 constraint\(s\) listed .* expected 1 to 4"),
    ("[[start]]A haiku, lowercase.[[end]]\n- Lowercase only.\n- lowercase  ONLY.", "stop", "constraints",
     r"constraint 2 repeats constraint 1"),
    ("[[start]]A haiku about autumn, all in lower", "length", "truncated", r"cut at evolution\.max_new_tokens before"),
    ("[[start]]A haiku, lowercase.[[end]]\n- Lowercase only.\n- Ends with", "length", "truncated",
     r"cut at evolution\.max_new_tokens within its list of constraints \(2 listed"),
])
def test_an_answer_that_cannot_be_used_is_a_failure_with_its_kind_and_reason(answer, finish, kind, reason):
    with pytest.raises(ev.Unusable, match=reason) as e:
        ev.parse_evolution(answer, 1, 3, seed_prompt="Write a haiku about autumn.", finish_reason=finish)
    assert e.value.kind == kind and e.value.reason


def test_the_range_of_constraints_follows_the_settings():
    two = "[[start]]X, more[[end]]\n- a\n- b"
    assert ev.parse_evolution(two, 2, 2).constraints == ["a", "b"]
    with pytest.raises(ev.Unusable, match=r"expected 3 to 4"):
        ev.parse_evolution(two, 3, 3)


# ------------------------------------------------------------------------------------ reproducibility


def test_the_main_constraint_and_the_request_are_seeded_by_the_question_alone():
    evo = _evolution()
    ids = [f"q{i}" for i in range(200)]
    first = [ev.main_constraint(evo, q) for q in ids]
    assert first == [ev.main_constraint(evo, q) for q in ids]  # the same draws, asked again
    assert [ev.main_constraint(evo, q) for q in reversed(ids)] == first[::-1]  # whatever the others
    assert set(first) == set(st.SPAR_CONSTRAINTS)  # every type drawn, over 200 questions
    other = [ev.main_constraint(_evolution(seed=1), q) for q in ids]
    assert other != first and sum(a == b for a, b in zip(first, other)) < 50  # another seed, other draws
    template = load_template("evolve", EVOLVE_FIELDS, "evolution.template")
    q = {"question_id": "q7", "prompt": "Describe a {curly} city at night."}
    a, b = ev.evolution_request(template, evo, q), ev.evolution_request(template, evo, q)
    assert a == b and a.seed == ev.request_seed(evo, "q7") != ev.request_seed(_evolution(seed=1), "q7")
    (sys_role, system), (user_role, text) = a.messages
    assert (sys_role, user_role) == ("system", "user") and system == evo.system_prompt
    assert "prompt: [[start]]Describe a {curly} city at night.[[end]]" in text
    assert f"Main constraint:\n{ev.main_constraint(evo, 'q7')}\n" in text and "add 1~3 other constraints" in text
    assert a.sampling.temperature == 0.7 and a.sampling.max_new_tokens == 1024
    assert ev.evolution_request(template, _evolution(system_prompt=None), q).messages[0][0] == "user"


def test_the_evolved_record_links_its_seed_and_its_criteria():
    seed = {"question_id": "ifbench-1", "prompt": "Write a haiku about autumn.", "source": "ifbench",
            "criteria": [{"criterion_id": "change_case:english_lowercase", "description": "lowercase",
                          "kind": "instruction", "instruction_id": "change_case:english_lowercase", "kwargs": {}}],
            "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
    parsed = ev.parse_evolution(GOOD, 1, 3, seed["prompt"])
    rec = ev.evolved_record(seed, parsed, "Genre: poetry", True, {"model": "m", "raw": GOOD, "cached": False})
    assert rec["question_id"] == "ifbench-1-evolved" and rec["seed_question_id"] == "ifbench-1"
    assert rec["prompt"] == parsed.instruction and rec["seed_prompt"] == seed["prompt"]
    assert [c["criterion_id"] for c in rec["criteria"]] == ["change_case:english_lowercase", "evolved:1", "evolved:2"]
    assert [c["kind"] for c in rec["criteria"]] == ["instruction", "evolved", "evolved"]
    assert rec["criteria"][1]["description"] == parsed.constraints[0]
    assert rec["instruction_id_list"] == seed["instruction_id_list"]
    assert rec["evolution"]["main_constraint"] == "Genre: poetry" and rec["evolution"]["raw"] == GOOD
    alone = ev.evolved_record(seed, parsed, "Genre: poetry", False, {})
    assert [c["kind"] for c in alone["criteria"]] == ["evolved", "evolved"] and "instruction_id_list" not in alone
    clash = {**seed, "criteria": [{"criterion_id": "evolved:1", "description": "x", "kind": "given"}]}
    with pytest.raises(InputError, match=r"question 'ifbench-1': .*'evolved:1'.*evolution\.keep_seed_criteria"):
        ev.evolved_record(clash, parsed, "x", True, {})


# ------------------------------------------------------------------------------- bad settings and input


def _with(**evolution) -> dict:
    return st.deep_merge(tiny_config(), {"evolution": {"enabled": True, **evolution}})


@pytest.mark.parametrize("evolution, message", [
    ({"min_constraints": 3, "max_constraints": 2}, r"^config key evolution\.min_constraints: 3 exceeds "
                                                   r"max_constraints=2$"),
    ({"min_constraints": 0}, r"^config key evolution\.min_constraints: .*greater than or equal to 1"),
    ({"model": "gpt5"}, r"^evolution\.model: unknown model 'gpt5' \(defined under models: oracle, smollm2, spare\)"),
    ({"main_constraints": []}, r"^config key evolution\.main_constraints: .*at least 1 item"),
    ({"main_constraints": ["Length", " "]}, r"^config key evolution\.main_constraints\[1\]: an empty constraint type"),
    ({"main_constraints": ["Length", "Genre", "Length"]},
     r"^config key evolution\.main_constraints\[2\]: 'Length' is listed twice \(main_constraints\[0\]\)"),
    ({"max_constraint": 2}, r"^config key evolution\.max_constraint: unknown key \(did you mean 'max_constraints'\?\)"),
    ({"temperature": -1}, r"^config key evolution\.temperature: "),
])
def test_bad_evolution_settings_name_the_key(evolution, message):
    with pytest.raises(ConfigError, match=message):
        st.validate(_with(**evolution))


def test_the_batch_api_needs_a_hosted_evolution_model():
    raw = st.deep_merge(_with(model="smollm2"), {"oracle": {"batch": True}, "cleaning": {"enabled": False},
                                                 "evaluation": {"oracle": "verifier"}})
    with pytest.raises(ConfigError, match=r"^oracle\.batch: evolution\.model is model 'smollm2', backend hf"):
        st.validate(raw)


def test_evolution_off_reads_nothing_of_it():
    """Disabled (the default), its settings are never checked nor read: a model that is no models key is no
    error, no stage declares them, and clean_questions' settings are as before."""
    off = st.validate(st.deep_merge(tiny_config(), {"evolution": {"model": "gpt5", "template": "nowhere.txt"}}))
    Rules(off).check_before_jobs()
    assert "evolve_questions" in pipeline.inactive_stages(off)
    assert "evolution" not in pipeline.params(STAGES["clean_questions"], off)
    on = st.validate(_with())
    assert "evolve_questions" not in pipeline.inactive_stages(on)
    assert pipeline.params(STAGES["clean_questions"], on)["evolution"] == {"enabled": True}
    # evolve_questions: the whole section and its model shape the evolved questions; checkpoint_every only tunes
    params, tunes = pipeline.params(STAGES["evolve_questions"], on), pipeline.tunes(STAGES["evolve_questions"], on)
    assert set(params["evolution"]) == set(st.Evolution.model_fields) - {"checkpoint_every"}
    assert tunes["evolution"] == {"checkpoint_every": 64} and set(params["models"]) == {"oracle"}
    assert "seed" not in params  # the evolution's own seed: replicates share the evolved questions


@pytest.mark.parametrize("text, message", [
    ("Rewrite {question} with {main_constraint}, {min_constraints} to {max_constraints} constraints.",
     r"^evolution\.template: template '.*evolve\.txt' uses fields \['main_constraint', 'max_constraints', "
     r"'min_constraints', 'question'\], expected \['instruction', 'main_constraint', 'max_constraints', "
     r"'min_constraints'\]$"),
    ("Rewrite {instruction}; main: {main_constraint}.", r"^evolution\.template: .* uses fields \['instruction', "
                                                         r"'main_constraint'\], expected"),
    ("Rewrite {instruction} {main_constraint} {min_constraints} {max_constraints} {", r"^evolution\.template: "
                                                                                      r".*not a valid format string"),
])
def test_a_template_without_its_placeholders_is_an_error_naming_the_key_before_any_job(tmp_path, text, message):
    bad = tmp_path / "evolve.txt"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=message):
        Rules(st.validate(_with(template=str(bad)))).check_before_jobs()
    with pytest.raises(ConfigError, match=r"^evolution\.template: unknown template 'evolv' \(packaged: .*evolve"):
        Rules(st.validate(_with(template="evolv"))).check_before_jobs()
    with pytest.raises(ConfigError, match=r"^evolution\.template: template file '.*missing\.txt' not found"):
        Rules(st.validate(_with(template=str(tmp_path / "missing.txt")))).check_before_jobs()


def test_a_broken_seed_file_names_the_file_and_line(tmp_path):
    qs = tmp_path / "questions.jsonl"
    qs.write_text('{"question_id": "a", "prompt": "x"}\n{"question_id": "b", "prompt": \n')
    out = {k: str(tmp_path / f"{k}.jsonl") for k in ("evolved", "failed")}
    with pytest.raises(InputError, match=rf"{re.escape(str(qs))}:2: "):
        ev.evolve_questions(str(qs), out["evolved"], out["failed"], _evolution(), {})
    qs.write_text('{"question_id": "a", "prompt": "x"}\n{"question_id": "a", "prompt": "y"}\n')
    with pytest.raises(InputError, match=r"duplicate question_id 'a'"):
        ev.evolve_questions(str(qs), out["evolved"], out["failed"], _evolution(), {})


# --------------------------------------------------------------------- the stage against the fault server


def evolution_answer(body: dict) -> dict:
    """The stand-in oracle's answer to an evolution request: the seed prompt made more specific, with the
    main constraint and one to three more, listed after it; 'None' for a prompt that asks to solve
    something (SPaR's rule for mathematics and coding); no [[start]]...[[end]] block for one that rambles."""
    user = body["messages"][-1]["content"]
    asked = re.search(r"prompt: \[\[start\]\](.*?)\[\[end\]\]", user, re.S)
    if asked is None:  # not an evolution request: cleaning's, keep the question
        return _completion(body, user, "Reason: a clear question.\nVerdict: YES")
    seed = asked.group(1)
    main = user.split("Main constraint:\n", 1)[1].split("\n", 1)[0].split(":")[0]
    n = 1 + int(hashlib.sha256(seed.encode()).hexdigest(), 16) % 3
    added = [f"The response satisfies a {main.lower()} constraint."] + [f"The response meets extra constraint {k}."
                                                                         for k in range(1, n + 1)]
    if "solve" in seed.lower():
        text = "[[start]]None[[end]]"
    elif "ramble" in seed.lower():
        text = f"A better prompt would be: {seed} Please be specific."
    else:
        text = f"[[start]]{seed} {' '.join(added)}[[end]]\nConstraints:\n" + "".join(f"- {c}\n" for c in added)
    return _completion(body, user, text)


def _completion(body: dict, user: str, text: str) -> dict:
    n_prompt = max(1, len(user) // 4)
    return {"id": "chatcmpl-" + hashlib.sha256(user.encode()).hexdigest()[:12], "object": "chat.completion",
            "created": 0, "model": body.get("model", "standin"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(text.split()),
                      "total_tokens": n_prompt + len(text.split())}}


class EvolveServer(FaultServer):
    """The fault server, its upstream the evolution stand-in (faults, counts and the Batch API its own)."""

    def _upstream(self, body: dict, auth: str) -> tuple[int, dict]:
        return 200, evolution_answer(body)


N_GOOD = 8


def _seeds(path) -> list[dict]:
    qs = [{"question_id": f"q{i:03d}", "prompt": f"Write about topic {i} for a general reader.", "source": "jsonl",
           "criteria": [{"criterion_id": "c0", "description": f"The response is about topic {i}.",
                         "kind": "given"}]} for i in range(N_GOOD)]
    qs += [{"question_id": "math", "prompt": "Solve 2x + 3 = 7.", "source": "jsonl", "criteria": []},
           {"question_id": "rambling", "prompt": "Ramble about anything.", "source": "jsonl", "criteria": []},
           {"question_id": "blank", "prompt": "   ", "source": "jsonl", "criteria": []}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(q) + "\n" for q in qs))
    return qs


def _files(root) -> dict:
    q = root / "results" / "run" / "questions"
    return {"questions": root / "data" / "questions.jsonl", "evolved": q / "evolved.jsonl",
            "failed": q / "evolve_failed.jsonl", "summary": q / "evolution.json", "log_dir": root / "logs" / "run"}


def _config(root, url: str, **overrides) -> dict:
    return stage_config(root, url, max_concurrency=1, run="run",
                        **st.deep_merge({"evolution": {"enabled": True, "model": "flaky", "checkpoint_every": 2}},
                                        overrides))


def _run(config: dict, f: dict) -> dict:
    run_stage("evolve_questions", {"questions": str(f["questions"])},
              {k: str(f[k]) for k in ("evolved", "failed", "summary")}, config, log_dir=str(f["log_dir"]))
    return json.loads(f["summary"].read_text())


VOLATILE = ("cached",)


def _stable(path) -> list[dict]:
    out = []
    for r in read_jsonl(path):
        r = {k: v for k, v in r.items() if k not in VOLATILE}
        if "evolution" in r:
            r["evolution"] = {k: v for k, v in r["evolution"].items() if k not in VOLATILE}
        out.append(r)
    return out


def test_the_stage_evolves_every_question_once_and_a_rerun_pays_nothing(tmp_path):
    f = _files(tmp_path)
    seeds = _seeds(f["questions"])
    sent = len(seeds) - 1  # the blank prompt is never sent
    with EvolveServer(rate=0.0) as fs:
        config = _config(tmp_path, fs.url)
        summary = _run(config, f)
        s = fs.summary()
        assert s["upstream_calls"] == s["distinct_requests"] == sent and s["paid_twice"] == 0
        assert summary["seeds"] == len(seeds) and summary["evolved"] == N_GOOD and summary["failed"] == 3
        assert summary["failures"] == {"declined": 1, "empty_prompt": 1, "format": 1}
        assert summary["asked_this_run"] == sent and summary["from_checkpoint"] == 0 and summary["cached"] == 0
        assert summary["models"]["flaky"]["calls"] == sent
        assert sum(summary["constraints"].values()) == N_GOOD and set(summary["constraints"]) <= {"2", "3", "4"}
        evolved = read_jsonl(f["evolved"])
        assert [r["question_id"] for r in evolved] == [f"q{i:03d}-evolved" for i in range(N_GOOD)]
        for r, q in zip(evolved, seeds):
            assert r["seed_question_id"] == q["question_id"] and r["prompt"].startswith(q["prompt"])
            assert r["criteria"][0] == q["criteria"][0]  # the seed's own criterion first (keep_seed_criteria)
            added = r["criteria"][1:]
            assert [c["description"] for c in added] == r["evolution"]["constraints"] and 2 <= len(added) <= 4
            assert all(c["kind"] == "evolved" and c["description"] in r["prompt"] for c in added)
            main = ev.main_constraint(config.typed().evolution, q["question_id"])
            assert r["evolution"]["main_constraint"] == main and main.split(":")[0].lower() in added[0]["description"]
        failed = {r["question_id"]: r for r in read_jsonl(f["failed"])}
        assert list(failed) == ["math", "rambling", "blank"]
        assert failed["math"]["kind"] == "declined" and failed["math"]["raw"] == "[[start]]None[[end]]"
        assert failed["rambling"]["kind"] == "format" and "no refined prompt" in failed["rambling"]["reason"]
        assert failed["blank"]["kind"] == "empty_prompt" and "raw" not in failed["blank"]
        assert not ev.checkpoint_of(f["evolved"]).exists()  # a finished job leaves no checkpoint
        first = (_stable(f["evolved"]), _stable(f["failed"]))

        again = _run(config, f)  # a forced rerun: every answer from the API cache
        assert fs.summary()["upstream_calls"] == sent
        assert again["cached"] == again["asked_this_run"] == sent and again["models"]["flaky"]["calls"] == 0
        assert (_stable(f["evolved"]), _stable(f["failed"])) == first


def test_a_run_stopped_midway_resumes_from_its_checkpoint_and_pays_only_for_the_rest(tmp_path):
    """The spending cap stops the stage at the fourth call (of the second checkpointed batch of two): the
    first batch is in the checkpoint, the third answer in the API cache. The rerun asks only for the
    questions not in the checkpoint, gets the third answer from the cache, and pays for the others once."""
    price = {"models": {"flaky": {"price": {"input": 2.0, "output": 8.0}}}}
    seeds = _seeds(_files(tmp_path / "ref")["questions"])
    sent = [q for q in seeds if q["prompt"].strip()]
    with EvolveServer(rate=0.0) as fs:  # the reference: no cap; what each call costs, in order
        ref = _files(tmp_path / "ref")
        _run(_config(tmp_path / "ref", fs.url, **price), ref)
        costs = [line["cost"] for line in jl.read(jl.ledger_path(str(tmp_path / "ref" / "logs"), "run"))]
    assert len(costs) == len(sent)
    f = _files(tmp_path / "stopped")
    _seeds(f["questions"])
    with EvolveServer(rate=0.0) as fs:
        config = _config(tmp_path / "stopped", fs.url, **price)
        evo = config.typed().evolution
        template = load_template("evolve", EVOLVE_FIELDS, "evolution.template")
        body = OpenAIModel("flaky", fs.url, "standin", str(tmp_path / "x"))._body(
            ev.evolution_request(template, evo, sent[3]))
        cap = sum(costs[:3]) + 0.99 * jl.worst_cost(jl.Rate(input=2.0, output=8.0), body)
        capped = st.validate(st.deep_merge(dict(config), {"budget": {"max_cost": cap}}))
        with pytest.raises(BudgetReached, match=r"budget\.max_cost"):
            _run(capped, f)
        assert fs.upstream_calls() == 3 and not f["evolved"].exists() and not f["summary"].exists()
        done = read_jsonl(ev.checkpoint_of(f["evolved"]))[1:]  # after its header (the job's fingerprint)
        assert [r["question_id"] for r in done] == [q["question_id"] for q in sent[:2]]

        summary = _run(config, f)  # the cap lifted (operational: the same job, its checkpoint taken up)
        s = fs.summary()
    assert s["upstream_calls"] == s["distinct_requests"] == len(sent) and s["paid_twice"] == 0
    assert summary["from_checkpoint"] == 2 and summary["asked_this_run"] == len(sent) - 2 and summary["cached"] == 1
    assert (_stable(f["evolved"]), _stable(f["failed"])) == (_stable(ref["evolved"]), _stable(ref["failed"]))
    assert not ev.checkpoint_of(f["evolved"]).exists()


def test_the_batch_api_evolves_in_one_batch_with_the_same_questions(tmp_path):
    with EvolveServer(rate=0.0) as fs:
        sync = _files(tmp_path / "sync")
        _seeds(sync["questions"])
        _run(_config(tmp_path / "sync", fs.url), sync)
        f = _files(tmp_path / "batch")
        _seeds(f["questions"])
        summary = _run(_config(tmp_path / "batch", fs.url, oracle={"batch": True, "batch_poll_s": 0.01}), f)
        assert fs.batches_created() == 1 and summary["evolved"] == N_GOOD
    assert _stable(f["evolved"]) == _stable(sync["evolved"]) and _stable(f["failed"]) == _stable(sync["failed"])


# ---------------------------------------------------------------------------------------------- the DAG


def _rulegraph(text: str) -> set[tuple[str, str]]:
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', text, re.M))
    return {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", text, re.M)}


def test_enabling_evolution_adds_exactly_the_evolve_job_upstream_of_cleaning(tmp_path):
    """The demo (evolution off) plans no evolve job and cleans the prepared questions; with evolution.enabled
    the one job more is evolve_questions, between prepare_questions and clean_questions. A template without
    its placeholders stops the parse, naming the key, before any job."""
    on = ["--config", "evolution={enabled: true}"]
    off_jobs = planned_jobs(smk(tmp_path, "-n", "--quiet", "rules").stdout)
    on_jobs = planned_jobs(smk(tmp_path, "-n", "--quiet", "rules", *on).stdout)
    assert "evolve_questions" not in off_jobs and on_jobs == {**off_jobs, "evolve_questions": 1}
    graph = _rulegraph(smk(tmp_path, "--rulegraph", *on).stdout)
    assert {("prepare_questions", "evolve_questions"), ("evolve_questions", "clean_questions")} <= graph
    assert ("prepare_questions", "clean_questions") not in graph
    assert {up for up, down in graph if down == "evolve_questions"} <= {"prepare_questions", "prepare_model"}
    # replicates: one evolution for the study (its own seed), one cleaning per replicate, of the same file
    out = smk(tmp_path, "-n", "--config", "evolution={enabled: true}", "replicates=2").stdout
    jobs = planned_jobs(out)
    assert jobs["evolve_questions"] == 1 and jobs["clean_questions"] == 2
    assert "results/demo/questions/evolved.jsonl" in out and "results/demo/seed-1235/questions/kept.jsonl" in out
    bad = tmp_path / "mine.txt"
    bad.write_text("Make this harder: {question}\n")
    p = smk(tmp_path, "-n", "--config", f"evolution={{enabled: true, template: {bad}}}", check=False)
    assert p.returncode != 0 and not (tmp_path / "results").exists()
    assert re.search(r"evolution\.template: template '.*mine\.txt' uses fields \['question'\], expected "
                     r"\['instruction', 'main_constraint', 'max_constraints', 'min_constraints'\]", p.stdout + p.stderr)


def test_the_packaged_template_is_spar_s_wording_with_exactly_its_placeholders():
    text = (ROOT / "src" / "judgeflow" / "prompts" / "evolve.txt").read_text()
    assert load_template("evolve", EVOLVE_FIELDS, "evolution.template") == text
    # thu-coai/SPaR at 6497aba, src/instruction_evolve.py: its task, its notes and its output format
    for line in ("In this task, you need to refine the prompt to make it more specific and complex.",
                 "prompt: [[start]]{instruction}[[end]]", "Main constraint:\n{main_constraint}",
                 "and need to add {min_constraints}~{max_constraints} other constraints.",
                 'just output "None" as the refined prompt.', "[[start]]your refined prompt[[end]]"):
        assert line in text, line
    for t in st.SPAR_CONSTRAINTS:  # every main constraint type is in the taxonomy the template shows
        kind = t.split(":")[0]
        assert f"  - {kind}:" in text, kind


def test_each_evolution_setting_reruns_the_evolution_and_cleaning_and_nothing_else(tmp_path):
    """A project of its own, run with real Snakemake up to clean_questions against the stand-in oracle
    (prepare_questions, evolve_questions, clean_questions); then a dry-run per changed setting: a setting that
    shapes the evolved questions plans the evolution and the cleaning, an operational one nothing, a cleaning
    setting the cleaning alone, and evolution off the cleaning of the prepared questions."""
    import yaml

    from project import make_project

    proj = make_project(tmp_path / "p")
    _seeds(proj / "data" / "questions.jsonl")
    with EvolveServer(rate=0.0) as fs:
        stand = {"backend": "openai", "base_url": fs.url, "model": "standin", "max_concurrency": 2}
        raw = st.deep_merge(tiny_config(), {
            "models": {"stand": stand, "stand2": stand},
            "evolution": {"enabled": True, "model": "stand", "checkpoint_every": 4},
            "cleaning": {"model": "stand", "template": "clean", "max_new_tokens": 32}})
        path = proj / "config" / "evolve.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        smk(proj, "--cores", "1", "--until", "clean_questions", configfile=path)
        kept = read_jsonl(proj / "results" / "tiny" / "questions" / "kept.jsonl")
        heldout = read_jsonl(proj / "results" / "tiny" / "questions" / "heldout.jsonl")
        assert sorted(q["question_id"] for q in kept + heldout) == [f"q{i:03d}-evolved" for i in range(N_GOOD)]
        paid = fs.upstream_calls()
        assert paid == 10 + N_GOOD  # every seed but the blank one evolved, every evolved question cleaned

        template = tmp_path / "evolve.txt"  # the packaged template, one line longer
        template.write_text((ROOT / "src/judgeflow/prompts/evolve.txt").read_text() + "Be concise.\n")
        both, clean = {"evolve_questions", "clean_questions"}, {"clean_questions"}
        changes = {
            "model": ({"evolution": {"model": "stand2"}}, both),
            "template": ({"evolution": {"template": str(template)}}, both),
            "system_prompt": ({"evolution": {"system_prompt": None}}, both),
            "main_constraints": ({"evolution": {"main_constraints": list(st.SPAR_CONSTRAINTS[:-1])}}, both),
            "min_constraints": ({"evolution": {"min_constraints": 2}}, both),
            "max_constraints": ({"evolution": {"max_constraints": 4}}, both),
            "keep_seed_criteria": ({"evolution": {"keep_seed_criteria": False}}, both),
            "max_new_tokens": ({"evolution": {"max_new_tokens": 512}}, both),
            "temperature": ({"evolution": {"temperature": 0.5}}, both),
            "seed": ({"evolution": {"seed": 3}}, both),
            "checkpoint_every": ({"evolution": {"checkpoint_every": 8}}, set()),
            "timeout": ({"models": {"stand": {"timeout": 30}}}, set()),
            "cleaning": ({"cleaning": {"max_new_tokens": 40}}, clean),
            "enabled": ({"evolution": {"enabled": False}}, clean),
        }
        variants = []
        for name, (change, _) in changes.items():
            f = tmp_path / f"{name}.yaml"
            f.write_text(yaml.safe_dump(st.deep_merge(raw, change), sort_keys=False))
            variants.append([name, str(f)])
        (tmp_path / "variants.json").write_text(json.dumps(variants))
        subprocess.run([sys.executable, "-c", DRY_RUNS, str(proj), str(tmp_path / "variants.json"),
                        str(tmp_path / "out.json")], check=True, timeout=900, cwd=ROOT / "tests")
        assert fs.upstream_calls() == paid  # dry-runs pay nothing
    result = json.loads((tmp_path / "out.json").read_text())
    assert all(ok for ok, _ in result.values()), {n: out for n, (ok, out) in result.items() if not ok}
    got = {name: set(jobs) - {"all"} for name, (_, jobs) in result.items()}
    assert got == {name: want for name, (_, want) in changes.items()}


# the dry-runs of the variants in one process (tests/dryrun_batch.py's in-process Snakemake), to clean_questions
DRY_RUNS = """
import json, sys
from dryrun_batch import dry_run, jobs_of

project, variants, out = sys.argv[1:4]
result = {}
for name, configfile in json.load(open(variants)):
    ok, text = dry_run(project, configfile, "-n", "--quiet", "rules", "--until", "clean_questions")
    result[name] = [ok, jobs_of(text) if ok else text[-2000:]]
json.dump(result, open(out, "w"))
"""
