"""The real DAG: dry-runs, --dag, a run of every stage on the real model (the session's tiny_run),
and the rerun property: after a change to any setting, the dry-run plans exactly the stages that
read it and what depends on them."""
from __future__ import annotations

import copy
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from judgeflow.refining.gate_study import select_roots

from project import ROOT, copy_project, job_inputs, make_project, nothing_to_do, planned_jobs, smk, tiny_config

DEMO_STAGES = ["prepare_model", "prepare_questions", "clean_questions", "sample_responses", "judge_responses",
               "tree_search", "tree_search_gate", "tree_search_summary", "sample_until_accept", "label_oracle",
               "score_proxy", "oracle_replay", "probe", "best_of_n", "judge_quality", "train_dpo", "dpo_diagnostics",
               "evaluate_responses", "evaluate_policies", "report"]
SINGLE_STAGES = ["refine_responses", "judge_refinements", "build_pairs"]  # refining.strategy: single
# self-play rounds 2, 3, ... (train_refiner: with refining.tree_search.refiner_training)
ROUND_STAGES = ["sample_round", "judge_round", "train_round", "train_refiner"]
# judging.calibration.questions > 0 (train_judge: one job per trained or reward-model judge)
CALIBRATION_STAGES = ["sample_calibration", "label_calibration", "train_judge", "judge_calibration"]
REPLICATE_STAGES = ["aggregate_replicates"]  # replicates: R (tests/test_replicates.py)
EVOLVE_STAGES = ["evolve_questions"]  # evolution.enabled (tests/test_evolve_questions.py)
STAGES = DEMO_STAGES + SINGLE_STAGES + ROUND_STAGES + CALIBRATION_STAGES + REPLICATE_STAGES + EVOLVE_STAGES


def test_dry_run_of_the_demo_lists_every_stage(tmp_path):
    """The embedded default, in an empty directory: every stage planned, one job per shard, gate, judge and
    round; both refinement strategies side by side on the same responses, and the calibration split."""
    jobs = planned_jobs(smk(tmp_path, "-n", "--quiet", "rules").stdout)
    assert set(DEMO_STAGES + SINGLE_STAGES + CALIBRATION_STAGES) <= set(jobs), jobs
    assert not set(ROUND_STAGES) & set(jobs), jobs
    assert jobs["sample_responses"] == jobs["judge_responses"] == jobs["tree_search"] == 2
    assert jobs["refine_responses"] == jobs["judge_refinements"] == 2
    assert jobs["tree_search_gate"] == 2 and jobs["tree_search_summary"] == 1  # gates 2of3 and 3of3, one round
    assert jobs["train_judge"] == 3 and jobs["sample_calibration"] == jobs["judge_calibration"] == 1  # 3 judges
    # multi_feedback and full_feedback (the demo trains no gate's pairs); the base and both evaluated
    assert jobs["train_dpo"] == 2 and jobs["evaluate_responses"] == 3
    one = planned_jobs(smk(tmp_path, "-n", "--quiet", "rules", "--config", "refining={strategy: tree_search}",
                           "training={variants: [tree_search_3of3]}").stdout)
    assert one["tree_search"] == 2 and one["train_dpo"] == 1 and not set(SINGLE_STAGES) & set(one), one


def test_dry_run_lists_each_rounds_and_gates_jobs_and_runs_one_round_alone(tmp_path):
    """Three self-play rounds: each round's sampling, judging, search, gates and training are jobs of
    their own (round, chain and gate are wildcards), and a target of round 2 plans nothing of round 3.
    Per-gate chains (SPaR's, the default): round 1 is searched once for both gates; then each gate's
    actor is trained on its own gate's pairs and searched for its own gate; nothing merges them."""
    extra = tmp_path / "rounds.yaml"
    extra.write_text(yaml.safe_dump({"refining": {"tree_search": {"rounds": 3}}}))
    configs = ["--configfile", str(ROOT / "config/config.yaml"), str(extra)]
    out = smk(tmp_path, "-n", *configs).stdout
    jobs = planned_jobs(out)
    # round 1: 2 shards, both gates; rounds 2 and 3: 2 chains x 2 shards, each chain's gate alone
    assert jobs["tree_search"] == 2 + 2 * 2 * 2 and jobs["tree_search_gate"] == 2 + 2 * 2
    assert jobs["sample_round"] == jobs["judge_round"] == 2 * 2 * 2 and jobs["train_round"] == 2 * 2
    for g in ("2of3", "3of3"):
        assert f"results/demo/tree_search/round-1/gate-{g}/final.jsonl" in out
        for r in (2, 3):
            assert f"results/demo/tree_search/round-{r}/chain-{g}/gate-{g}/final.jsonl" in out
            assert f"results/demo/tree_search/round-{r - 1}/chain-{g}/dpo/model" in out
        assert f"results/demo/tree_search/round-3/chain-{g}/responses/shard-1.jsonl" in out
    assert "round-3/chain-2of3/dpo" not in out and "round-2/chain-2of3/gate-3of3" not in out
    target = "results/demo/tree_search/round-2/chain-3of3/gate-3of3/comparisons.jsonl"
    one = smk(tmp_path, "-n", *configs, "--", target).stdout
    # round 2 of gate 3of3's chain needs round 1's search and its 3of3 pairs, nothing of the 2of3 chain
    assert "round-1/gate-3of3/pairs" in one and "round-1/chain-3of3/dpo" in one
    assert "chain-2of3" not in one and "gate-2of3" not in one and "round-3" not in one
    assert planned_jobs(one)["train_round"] == 1 and "tree_search_summary" not in planned_jobs(one)
    # chains: shared, asked for: one actor per round, trained on train_gate's (the loosest gate's) pairs
    extra.write_text(yaml.safe_dump({"refining": {"tree_search": {"rounds": 3, "chains": "shared"}}}))
    out = smk(tmp_path, "-n", *configs).stdout
    jobs = planned_jobs(out)
    assert jobs["tree_search"] == 3 * 2 and jobs["tree_search_gate"] == 3 * 2  # rounds x shards, rounds x gates
    assert jobs["sample_round"] == jobs["judge_round"] == 2 * 2 and jobs["train_round"] == 2  # rounds 2 and 3
    assert "results/demo/tree_search/round-2/dpo/model" in out and "round-3/dpo" not in out and "chain-" not in out
    one = smk(tmp_path, "-n", *configs, "--", "results/demo/tree_search/round-2/gate-3of3/comparisons.jsonl").stdout
    assert "round-2/gate-3of3" in one and "round-1/gate-2of3/pairs" in one and "round-3" not in one
    assert "round-2/gate-2of3" not in one


def test_dry_run_with_refiner_training_retrains_each_chains_refiner_from_its_last(tmp_path):
    """refining.tree_search.refiner_training (SPaR's refiner and judge training): after rounds 1 and 2 of each
    gate's chain a train_refiner job, from that chain's previous refiner; round r+1's search reads it, and
    nothing of the other chain. The demo's trained judges run on smollm2, so the refiner is another models
    key with the same weights (a trained judge cannot read a retrained refiner) and judge_round reads none."""
    extra = tmp_path / "refiner.yaml"
    extra.write_text(yaml.safe_dump({
        "models": {"refiner": {"backend": "hf", "path": "resources/models/SmolLM2-135M-Instruct"}},
        "refining": {"model": "refiner", "tree_search": {"rounds": 3, "refiner_training": {"enabled": True}}}}))
    configs = ["--configfile", str(ROOT / "config/config.yaml"), str(extra)]
    out = smk(tmp_path, "-n", *configs).stdout
    jobs = planned_jobs(out)
    assert jobs["train_refiner"] == jobs["train_round"] == 2 * 2  # rounds 1 and 2, each chain
    for g in ("2of3", "3of3"):
        for r in (1, 2):
            assert f"results/demo/tree_search/round-{r}/chain-{g}/refiner/model" in out
    assert "round-3/chain-2of3/refiner" not in out  # nothing uses the last round's
    target = "results/demo/tree_search/round-3/chain-3of3/trees/shard-0.jsonl"
    one = smk(tmp_path, "-n", *configs, "--", target).stdout
    # round 3's search: round 2's refiner of its chain, trained from round 1's, on round 2's search of the chain
    assert planned_jobs(one)["train_refiner"] == 2 and "chain-2of3" not in one and "gate-2of3" not in one
    from judgeflow.workflow.pipeline import judges_on_retrained_refiner
    from judgeflow.workflow.settings import load

    # the trained judges keep the original weights
    assert not judges_on_retrained_refiner(load(ROOT / "config/config.yaml", yaml.safe_load(extra.read_text())))
    wrong = tmp_path / "wrong.yaml"  # the refiner on the trained judges' model: stopped before any job
    wrong.write_text(yaml.safe_dump({"refining": {"tree_search": {"rounds": 2,
                                                                  "refiner_training": {"enabled": True}}}}))
    p = smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml"), str(wrong), check=False)
    assert p.returncode != 0
    assert "judging.judges[0].model: a trained judge on the refiner's model" in p.stdout + p.stderr


def test_every_rule_is_a_declared_stage():
    from judgeflow.workflow.pipeline import STAGES as DECLARED

    out = smk(ROOT, "--list-rules").stdout
    rules = set(re.findall(r"^(\w+)", out, re.M))
    assert sorted(rules - {"all"}) == sorted(DECLARED) == sorted(STAGES)


def test_trained_judges_are_fitted_before_any_stage_that_runs_the_judges(tmp_path):
    """Two trained judges and a prompt one: a train_judge job each, on the calibration split; every stage
    that runs the judges waits for both (their judge.json are its inputs); without a calibration split the
    four calibration stages are not planned at all."""
    cfg = tmp_path / "trained.yaml"
    cfg.write_text(yaml.safe_dump({"judging": {"k": 2, "calibration": {"questions": 30}, "judges": [
        {"id": "t1", "kind": "trained", "model": "smollm2"},
        {"id": "t2", "kind": "trained", "model": "smollm2", "layers": [-1], "pooling": ["mean"]},
        {"id": "j3", "model": "smollm2", "template": "judge_brief", "answer_first": True, "max_new_tokens": 1}]}}))
    out = smk(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml"), str(cfg)).stdout
    jobs = planned_jobs(out)
    assert jobs["train_judge"] == 2 and jobs["sample_calibration"] == jobs["judge_calibration"] == 1, jobs
    for rule in ("judge_responses", "tree_search", "sample_until_accept", "evaluate_responses"):
        block = next(b for b in out.split("\nrule ")[1:] if b.startswith(rule + ":"))
        assert "results/demo/judges/t1/judge.json" in block and "results/demo/judges/t2/judge.json" in block, rule
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(yaml.safe_dump({"judging": {"k": 1, "calibration": {"questions": 0}, "judges": [
        {"id": "j3", "model": "smollm2", "template": "judge_brief", "answer_first": True, "max_new_tokens": 1}]},
        "refining": {"tree_search": {"gates": [{"k": 1}]}}, "oracle": {"bon": {"j": [1]}}}))
    alone = smk(tmp_path, "-n", "--quiet", "rules", "--configfile", str(ROOT / "config/config.yaml"), str(prompts))
    assert not set(CALIBRATION_STAGES) & set(planned_jobs(alone.stdout))


def test_dag_renders(tmp_path):
    out = smk(tmp_path, "--dag").stdout
    assert out.lstrip().startswith("digraph") and "tree_search_gate" in out


def test_bad_config_fails_before_any_job(tmp_path):
    p = smk(tmp_path, "-n", "--config", "judging={k: 9}", check=False)
    assert p.returncode != 0 and "judging.k: 9 exceeds the number of judges J=3" in p.stdout + p.stderr


def test_a_rule_with_another_stage_s_declarations_stops_the_parse_naming_it(tmp_path):
    """A rule names its stage once (S = JF.stage("<rule>") just above it); the object of another stage in its
    place (here judge_refinements' in judge_responses: the same stage module and settings, so nothing else would
    tell) stops the parse with an error naming the rule, before any DAG."""
    proj = make_project(tmp_path / "p")
    judge = proj / "rules" / "judge.smk"
    assert judge.read_text().count('S = JF.stage("judge_responses")') == 1
    judge.write_text(judge.read_text().replace('S = JF.stage("judge_responses")', 'S = JF.stage("judge_refinements")'))
    p = smk(proj, "-n", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "Building DAG" not in out, out[-3000:]
    assert 'rule judge_responses takes its declarations from JF.stage("judge_refinements")' in out, out[-3000:]


# The workflow parsed (not run) in a process of its own: every rule's outputs, the report's sections and
# headline (its params) and rule all's inputs. WorkflowApi._workflow is the parsed workflow the CLI uses.
PARSE = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

snakefile, workdir, *configfiles = sys.argv[1:]
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(ResourceSettings(), ConfigSettings(configfiles=[Path(c) for c in configfiles]),
                            snakefile=Path(snakefile), workdir=Path(workdir))._workflow
    rules = {r.name: r for r in workflow.rules}
    print("PARSED " + json.dumps({"outputs": {n: dict(r.output._plainstrings().items()) for n, r in rules.items()},
                                  "sections": rules["report"].params.sections,
                                  "headline": rules["report"].params.headline,
                                  "all": [str(f) for f in rules["all"].input]}))
"""


def parsed(workdir: Path, *configfiles) -> dict:
    p = subprocess.run([sys.executable, "-c", PARSE, str(ROOT / "Snakefile"), str(workdir), *map(str, configfiles)],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    line = next((x for x in p.stdout.splitlines() if x.startswith("PARSED ")), None)
    assert p.returncode == 0 and line, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(line.removeprefix("PARSED "))


def test_the_report_and_rule_all_take_their_files_from_the_rules_outputs(tmp_path):
    """Each result path is spelled once, in the output: of the rule that makes it: the report's sections and
    headline files and rule all's targets are those outputs; the report shows Best-of-N keeping the judges'
    top-scored draw (its table and figure), and its headline reads only the report's own inputs."""
    got = parsed(tmp_path)
    made = {f: rule for rule, outputs in got["outputs"].items() for f in outputs.values()}
    files = [f for _, fs in got["sections"] for f in fs]
    assert files and all(f in made for f in files), sorted(set(files) - set(made))
    assert set(got["headline"].values()) <= set(files)
    best = dict(got["sections"])["Best-of-N"]
    kept = got["outputs"]["best_of_n"]
    assert kept["kept"] in best and kept["kept_plot"] in best and got["headline"]["bon_kept"] == kept["kept"]
    assert got["headline"]["bon_kept"].endswith("oracle/bon_kept.csv")
    assert all(f in made for f in got["all"]) and set(files) <= set(got["all"])
    assert got["outputs"]["report"]["html"] in got["all"]
    assert [h for h, _ in got["sections"]][:1] == ["Questions"] and len(got["sections"]) == 11  # the demo: all


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_tiny_run_end_to_end(tiny_run):
    res = tiny_run / "results" / "tiny"
    kept, rejected, held = (_lines(res / f"questions/{f}.jsonl") for f in ("kept", "rejected", "heldout"))
    assert len(kept) + len(rejected) + len(held) == 4 and len(held) == 1
    blank = next(q for q in rejected if q["question_id"] == "blank")
    assert blank["cleaning"]["reason"] == "empty prompt"  # rejected with a reason; the run went on
    responses = _lines(res / "responses/shard-0.jsonl")
    assert len(responses) == 2 * len(kept)
    verdicts = _lines(res / "verdicts/responses/shard-0.jsonl")
    n_criteria = sum(len(q["criteria"]) + 1 for q in kept)  # + the generic criterion
    assert len(verdicts) == 2 * n_criteria * 3
    keys = {(v["response_id"], v["refinement_id"], v["criterion_id"], v["judge_id"]) for v in verdicts}
    assert len(keys) == len(verdicts) and "verdict_id" not in verdicts[0]  # keyed by tuples
    assert {v["label"] for v in verdicts} <= {"yes", "no", "abstain"}
    assert all(0 <= v["p_yes"] <= 1 for v in verdicts)  # hf judges give P(yes)
    aggs = _lines(res / "verdicts/responses/shard-0.aggregate.jsonl")
    refinements = _lines(res / "refinements/shard-0.jsonl")
    assert len(refinements) == sum(len(a["failed"]) + 1 for a in aggs if not a["accepted"])  # K multi + 1 full
    summary = json.loads((res / "pairs/summary.json").read_text())
    multi = _lines(res / "pairs/multi_feedback.jsonl")
    assert summary["multi_feedback_pairs"] == len(multi)
    assert all(p["prompt"][0]["role"] == "user" and p["chosen"][0]["role"] == "assistant" for p in multi)
    for rule in ("clean_questions", "sample_responses", "judge_responses", "build_pairs"):
        assert list((tiny_run / "benchmarks" / "tiny" / rule).glob("*.tsv")), f"no benchmark for {rule}"
    cleaning = json.loads((res / "questions/cleaning.json").read_text())
    assert cleaning["models"]["oracle"]["calls"] == cleaning["asked_oracle"] > 0
    # each job's log says what it read, all of it declared
    log = (tiny_run / "logs" / "tiny" / "sample_responses" / "shard-0.log").read_text()
    assert "settings read: " in log and "sampling.temperature" in log and "judging" not in log.split("settings read")[1]

    # sample until accept: every kept question drawn until its first accept or n_max=2
    draws = _lines(res / "draws/shard-0.jsonl")
    for q in kept:
        mine = [d for d in draws if d["question_id"] == q["question_id"]]
        first = [d["draw"] for d in mine if d["first_accept"]]
        assert len(first) <= 1 and [d["draw"] for d in mine] == list(range(1, len(mine) + 1))
        assert mine[0]["n_accept"] == (first[0] if first else None)
        assert len(mine) == (2 if not first or first[0] == 2 else 1)  # min_draws=1: stop at the first accept
    nstar = json.loads((res / "oracle/nstar.json").read_text())
    labels = _lines(res / "oracle/labels.jsonl")
    certify = [lab for lab in labels if lab.get("for") != "curve"]
    assert nstar["calls"] == len(certify) <= 40 and nstar["strategy"] == "prediction_powered"
    proxies = {r["draw_id"]: r for r in _lines(res / "oracle/proxy-smollm2.jsonl")}
    assert set(proxies) == {d["draw_id"] for d in draws if d["first_accept"]}  # one score per accepted draw
    assert all(0 <= r["proxy"] <= 1 and r["source"] == "smollm2" for r in proxies.values())
    assert all(lab["proxy"] == proxies[lab["draw_id"]]["proxy"] for lab in certify)
    replay = list(csv.DictReader((res / "oracle/replay.csv").open()))
    assert [(r["strategy"], r["proxy"]) for r in replay] == [("fixed_sequence", "none"),
                                                             ("prediction_powered", "judges"),
                                                             ("prediction_powered", "smollm2")]
    assert all(int(r["runs"]) == 3 and int(r["pool"]) == len(proxies) for r in replay)
    assert nstar["calls"] + nstar["curve_calls"] == len(labels) == sum(nstar["accepted_per_n"].values())
    assert all(lab["label"] is None for lab in labels if lab["question_id"] == "rivers")  # not verifiable
    curve = (res / "oracle/tp_curve.csv").read_text().splitlines()
    assert curve[0].startswith("n,") and len(curve) == 1 + 2
    assert (res / "oracle/tp_curve.png").stat().st_size > 1000 and (res / "oracle/bon_grid.png").exists()
    evaluation = json.loads((res / "evaluation/evaluation.json").read_text())
    assert evaluation["heldout_questions"] == 1 and set(evaluation["policies"]) >= {"base"}
    quality = json.loads((res / "judges/quality.json").read_text())
    known = {}
    for f in ("labels", "bon_labels"):  # every draw the oracle labelled, once
        for lab in _lines(res / f"oracle/{f}.jsonl"):
            known.setdefault(lab["draw_id"], lab["label"])
    assert quality["labelled"] == sum(1 for x in known.values() if x in (0, 1))
    assert [r["judge"] for r in quality["judges"]] == ["j1", "j2", "j3", "k-of-J"] and len(quality["agreement"]) == 3
    page = (res / "report.html").read_text()
    assert "tp_curve.png" in page and "id=headline" in page and "Certified N*" in page

    # the tree search: two self-play rounds, two gates, SPaR's per-gate chains: round 1 searched once for both
    # gates; each gate's round-2 actor DPO-trained on its own gate's round-1 pairs, searched for its own gate
    tree = res / "tree_search"
    gates = list(csv.DictReader((tree / "gates.csv").open()))
    assert [(g["round"], g["gate"]) for g in gates] == [("1", "2of3"), ("1", "3of3"), ("2", "2of3"), ("2", "3of3")]
    for g in gates:
        r, gate = int(g["round"]), g["gate"]
        lineage = tree / ("round-1" if r == 1 else f"round-2/chain-{gate}")
        aggs = _lines(res / "verdicts/responses/shard-0.aggregate.jsonl" if r == 1 else
                      lineage / "verdicts/shard-0.aggregate.jsonl")
        nodes = _lines(lineage / "trees/shard-0.jsonl")
        roots = [n for n in nodes if n["depth"] == 0]
        # SPaR's roots (refining.tree_search.root_choice: one_per_question): one rejected response per question
        rejected = [a for a in aggs if not a["accepted"]]
        assert {n["root_id"] for n in roots} == {a["response_id"] for a in select_roots(rejected, "one_per_question",
                                                                                 tiny_config()["seed"])}
        assert len(roots) == len({a["question_id"] for a in rejected})
        assert all(n["depth"] <= 2 and (n["usable"] or (n["value"] is None and not n["passes"])) for n in nodes)
        k = int(gate[0])
        if r == 2:  # a chain's own search: its gate's nodes only
            assert all(n["gates"] == [k] for n in nodes if n["depth"] > 0)
        final = _lines(lineage / f"gate-{gate}/final.jsonl")
        assert len(final) == len(roots) == int(g["roots"]) and sum(f["solved"] for f in final) == int(g["solved"])
        assert all(f["chain"] == (gate if r == 2 else None) for f in final)
        for f in final:  # SPaR's exit: of gate k's search, the first level holding a node passing the gate on
            # every criterion; of its passing nodes, the highest value (mean P(YES), then level order, on ties)
            passing = [n for n in nodes if n["root_id"] == f["root_id"] and n["usable"] and k in n["gates"]
                       and all(y >= k for y in n["yes"].values())]
            level = [n for n in passing if n["depth"] == min((m["depth"] for m in passing), default=None)]
            best = min(level, key=lambda n: (-(n["value"] or 0), -(n["p_yes_mean"] or 0), n["order"]),
                       default=None)
            assert f["exit_node_id"] == (best["node_id"] if best else None)
        pairs = _lines(lineage / f"gate-{gate}/pairs.jsonl")
        assert len(pairs) == sum(f["solved"] and not f["passed_at_root"] for f in final)
        comps = _lines(lineage / f"gate-{gate}/comparisons.jsonl")
        assert len(comps) == len(pairs) and all(c["outcome"] in ("win", "loss", "tie", "inconsistent", "abstain")
                                                for c in comps)
        decided = int(g["oracle_wins"]) + int(g["oracle_losses"])
        assert (g["win_rate"] == "") == (decided == 0)
    for gate in ("2of3", "3of3"):  # each chain: trained on its own gate's round-1 pairs, its actor samples round 2
        trained_dir = tree / f"round-1/chain-{gate}/dpo"
        trained = json.loads((trained_dir / "summary.json").read_text())
        round1_pairs = _lines(tree / f"round-1/gate-{gate}/pairs.jsonl")
        assert trained["variant"] == f"round-1-chain-{gate}" and trained.get("pairs_read", 0) == len(round1_pairs)
        # from the files each job read (Snakemake's record of its inputs)
        assert job_inputs(tiny_run, trained_dir / "model") >= {str(Path("results/tiny/tree_search/round-1") /
                                                                   f"gate-{gate}/pairs.jsonl")}
        sampled = job_inputs(tiny_run, tree / f"round-2/chain-{gate}/responses/shard-0.jsonl")
        assert f"results/tiny/tree_search/round-1/chain-{gate}/dpo/model" in sampled
        assert not any("chain-" in f and gate not in f for f in sampled)
    for gate in ("2of3", "3of3"):  # each chain's refiner, retrained on its own gate's round-1 successes (SPaR)
        refiner = tree / f"round-1/chain-{gate}/refiner"
        done = json.loads((refiner / "summary.json").read_text())
        examples = _lines(refiner / "examples.jsonl")
        assert not done["skipped"] and done["optimizer_steps"] == 1 and (refiner / "model/config.json").exists()
        assert done["examples_read"] == len(examples) and done["training"] == f"round-1-chain-{gate}-refiner"
        # a refinement per round-1 root whose final node for the gate (its exit, else its search's best node:
        # SPaR's) lies below the root with a value above 0.5
        k, nodes = int(gate[0]), _lines(tree / "round-1/trees/shard-0.jsonl")
        want = []
        for f in _lines(tree / f"round-1/gate-{gate}/final.jsonl"):
            made = [n for n in nodes if n["root_id"] == f["root_id"] and n["depth"] > 0 and k in n["gates"]
                    and n["usable"]]
            best = next((n for n in made if n["node_id"] == f["exit_node_id"]), None) if f["solved"] else \
                max(made, key=lambda n: (n["value"] or 0, n["p_yes_mean"] or 0, -n["order"]), default=None)
            if best is not None and (best["value"] or 0) > 0.5:
                want.append(f"refinement/{best['node_id']}")
        assert sorted(e["example_id"] for e in examples if e["kind"] == "refinement") == sorted(want)
        assert all(e["kind"] in ("refinement", "judgment") for e in examples)
        assert job_inputs(tiny_run, refiner / "model") >= {"results/tiny/tree_search/round-1/trees/shard-0.jsonl",
                                                           "results/tiny/verdicts/responses/shard-0.jsonl"}
        # round 2 of the chain: its search refines with that refiner, and its judges (all on the refiner's model,
        # SPaR's refiner-judge) judge with it: the files each job read, and the weights its log says it loaded
        model = f"results/tiny/tree_search/round-1/chain-{gate}/refiner/model"
        for made, rule in ((f"round-2/chain-{gate}/trees/shard-0.jsonl", "tree_search"),
                           (f"round-2/chain-{gate}/verdicts/shard-0.jsonl", "judge_round")):
            assert model in job_inputs(tiny_run, tree / made), made
            log = (tiny_run / f"logs/tiny/{rule}/round-2/chain-{gate}/shard-0.log").read_text()
            assert f"from {model} on" in log or f"from {(tiny_run / model)} on" in log, log[-2000:]
    # every training writes TensorBoard event files where its summary says (training.report_to's default)
    for summary_file in [*tree.glob("round-1/chain-*/dpo/summary.json"),
                         *tree.glob("round-1/chain-*/refiner/summary.json"),
                         *(tiny_run / "results/tiny/dpo").glob("*/summary.json")]:
        done = json.loads(summary_file.read_text())
        if not done.get("skipped"):
            assert done["logs"] == "logs/tensorboard"
            assert list((summary_file.parent / "logs/tensorboard").glob("events.out.tfevents.*")), summary_file
    summary = json.loads((tree / "summary.json").read_text())
    assert summary["exit"] == "best_at_level"
    # one search per round 1 and per chain's round 2 (its gate alone): at least the strictest alone, at most a
    # search per gate
    assert list(summary["rounds"]) == ["1", "2/chain-2of3", "2/chain-3of3"]
    # what each round-2 search ran with: its chain's round-1 actor and refiner, as their summaries say; the
    # report says it too
    page = (tiny_run / "results/tiny/report.html").read_text()
    assert "trained" not in summary["rounds"]["1"]
    for gate in ("2of3", "3of3"):
        trained = summary["rounds"][f"2/chain-{gate}"]["trained"]
        refiner = json.loads((tree / f"round-1/chain-{gate}/refiner/summary.json").read_text())
        actor = json.loads((tree / f"round-1/chain-{gate}/dpo/summary.json").read_text())
        assert trained["refiner"] == {"training": f"round-1-chain-{gate}-refiner", "skipped": False,
                                      "used": refiner["examples_used"], "optimizer_steps": 1,
                                      "used_by_kind": refiner["used_by_kind"]}
        assert trained["actor"]["training"] == f"round-1-chain-{gate}"
        assert trained["actor"]["skipped"] == actor["skipped"] and trained["actor"]["used"] == actor.get("pairs_used")
        assert f"search 2/chain-{gate}: " in page and f"refiner trained on {refiner['examples_used']} example(s)" \
            in page
    for r in summary["rounds"]:
        share = summary["rounds"][r]["sharing"]
        assert max(share["alone_nodes"].values()) <= share["shared_nodes"] <= share["separate_searches_nodes"]
    # the gates compared on the same roots in round 1, per question in round 2 (each chain its own roots),
    # first in the summary and in the report's panel
    assert [(p["round"], p["gate_a"], p["gate_b"], p["paired_by"]) for p in summary["gate_pairs"]] == [
        (1, "2of3", "3of3", "root"), (2, "2of3", "3of3", "question")]
    first, second = summary["gate_pairs"]
    assert first["n_roots"] == int(gates[0]["roots"])  # round 1: the same roots under both gates
    # round 2: every question either chain rooted; one the other chain did not root counts there as no change
    rooted = {g: {f["question_id"] for f in _lines(tree / f"round-2/chain-{g}/gate-{g}/final.jsonl")}
              for g in ("2of3", "3of3")}
    assert second["n_roots"] == second["n_questions"] == len(rooted["2of3"] | rooted["3of3"])
    outcomes = [o for o in _lines(tree / "gate_outcomes.jsonl") if o["round"] == 2]
    assert {(o["gate"], o["question_id"]) for o in outcomes} == {(g, q) for g in rooted for q in rooted[g]}
    assert "compared on the same questions, each gate its own chain (paired, round 2)" in page
    assert "gate_pairs.csv" in page
    assert "discordant questions" in page and "searched for its gate alone (per-gate chains)" in page
    assert (tree / "gates.png").stat().st_size > 1000 and "Tree search" in page and "gates.png" in page

    # finished: a rerun has nothing to do
    assert "Nothing to be done" in smk(tiny_run, "-n", configfile=tiny_run / "config/tiny.yaml").stdout


@pytest.mark.slow
def test_a_judge_change_reruns_judging_and_what_follows_and_pays_the_oracle_nothing(tiny_run, tmp_path):
    proj = copy_project(tiny_run, tmp_path / "p")
    cfg = yaml.safe_load((proj / "config/tiny.yaml").read_text())
    cfg["judging"]["judges"][0]["max_new_tokens"] = 24
    path = proj / "config/tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(smk(proj, "-n", configfile=path).stdout)
    assert {"judge_responses", "refine_responses", "judge_refinements", "build_pairs", "sample_until_accept",
            "label_oracle", "best_of_n", "evaluate_responses", "report", "all"} <= set(jobs), jobs
    assert not set(jobs) & {"prepare_model", "prepare_questions", "clean_questions", "sample_responses"}, jobs
    smk(proj, "--cores", "2", "--until", "build_pairs", configfile=path)
    assert nothing_to_do(smk(proj, "-n", "--until", "build_pairs", configfile=path).stdout)
    # the oracle is not paid again: a forced rerun of cleaning is served from the cache
    res = proj / "results" / "tiny"
    before = json.loads((res / "questions/cleaning.json").read_text())
    kept = _lines(res / "questions/kept.jsonl")
    smk(proj, "--cores", "2", "--forcerun", "clean_questions", "--until", "clean_questions", configfile=path)
    again = json.loads((res / "questions/cleaning.json").read_text())
    assert again["models"]["oracle"]["calls"] == 0
    assert again["models"]["oracle"]["cache_hits"] == before["asked_oracle"]
    assert [(q["question_id"], q["cleaning"]["raw"]) for q in _lines(res / "questions/kept.jsonl")] == \
        [(q["question_id"], q["cleaning"]["raw"]) for q in kept]


@pytest.mark.slow
def test_the_probe_on_the_real_dag_and_with_too_few_questions(tiny_run, tmp_path):
    """The probe on the finished tiny run's questions and labels (the real model's hidden states): too
    few questions for its folds is the job's error with both numbers; with enough folds it runs, and
    the replay gains the probe's proxy."""
    proj = copy_project(tiny_run, tmp_path / "p")
    path = proj / "config/tiny.yaml"
    cfg = yaml.safe_load(path.read_text())
    res = proj / "results" / "tiny"
    labelled = {lab["question_id"] for f in ("labels", "bon_labels") for lab in _lines(res / f"oracle/{f}.jsonl")
                if lab["label"] is not None}
    cfg["probe"] = {"enabled": True, "folds": len(labelled) + 1, "bootstrap": 100}
    path.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(smk(proj, "-n", configfile=path).stdout)
    assert set(jobs) == {"probe", "oracle_replay", "report", "all"}, jobs
    bad = smk(proj, "--cores", "2", "--until", "probe", configfile=path, check=False)
    log = (proj / "logs/tiny/probe/probe.log").read_text()
    assert bad.returncode != 0 and f"probe: {len(labelled)} questions have oracle labels, need at least " \
        f"folds={len(labelled) + 1}" in log
    assert not (res / "probe/metrics.json").exists()
    cfg["probe"]["folds"] = len(labelled)
    path.write_text(yaml.safe_dump(cfg))
    smk(proj, "--cores", "2", configfile=path)
    metrics = json.loads((res / "probe/metrics.json").read_text())
    assert metrics["n_questions"] == len(labelled) and set(metrics["metrics"]) == {"p", "p1", "p0"}
    assert metrics["hidden"] == 576 and metrics["layer"] == -1
    preds = _lines(res / "probe/predictions.jsonl")
    assert all(0 <= r[k] <= 1 for r in preds for k in ("p", "p0", "p1", "tp_accepted"))
    replay = list(csv.DictReader((res / "oracle/replay.csv").open()))
    assert [r["proxy"] for r in replay] == ["none", "judges", "smollm2", "probe"]
    assert "Activation probe" in (res / "report.html").read_text()


# ------------------------------------------------------------------------------ the rerun property

# Keys whose change moves outputs rather than changing them, with what a dry-run must then plan:
# run and results_dir every stage under results/<run>/; resources_dir the question file and all
# that follows (the models stay where models.<name>.path says).
RELOCATING = {"run", "results_dir", "resources_dir", "replicates"}  # replicates: results/<run>/seed-<s>/
RUN_SCOPED = set(STAGES) - {"prepare_model", "prepare_questions"}
# Keys that add or remove jobs of the rules they do not shape: another number of self-play rounds
# plans the new (or, fewer, no) rounds' jobs, and the summary over the rounds (which reads it).
# Per-gate chains or a shared one: the rounds after the first are other jobs (round-<r>/chain-<gate>/ or round-<r>/).
ROUND_JOBS = {"tree_search", "tree_search_gate", "sample_round", "judge_round", "train_round", "train_refiner"}
MORE_JOBS = {"refining.tree_search.rounds": ROUND_JOBS, "refining.tree_search.chains": ROUND_JOBS,
             # no trained refiner: round 2's searches and judges lose it as an input (train_refiner, which reads
             # the key, leaves the DAG)
             "refining.tree_search.refiner_training.enabled": {"tree_search", "tree_search_gate", "judge_round"}}
ROUND_ONE_TRAININGS = {"train_round", "train_refiner"}  # the tiny run's: after round 1 of each chain
LATE = ROUND_ONE_TRAININGS | {"sample_round", "judge_round"}  # what reaches round 2's jobs alone
# settings that bring stages into the DAG which read nothing of them (the calibration split's sampling and
# labels), beside the stages that read them and what follows
ACTIVATES = {"judging.calibration.questions": {"sample_calibration", "label_calibration", "judge_calibration"}}


def _set(raw: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(raw)
    node = out
    for i, p in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[p]
            continue
        if p not in node or node[p] is None:
            node[p] = [] if isinstance(path[i + 1], int) else {}
        node = node[p]
    node[path[-1]] = value
    return out


def _candidates(path: tuple, value, validated: dict, template_dir: Path | None = None) -> list:
    """Changed values to try for one setting, the first that validates is used. A template: another
    packaged one, else a copy of it (one more line) in `template_dir`: one with the placeholders its stage
    fills (the parse checks them)."""
    if path == ("cluster", "api_rules"):  # a login-node rule more (where Snakemake runs): no output changes
        return [{"best_of_n": "oracle.labeller"}]
    name = path[-1]
    models = sorted(validated["models"])
    if name == "proxy":
        return [c for c in ("judges", *models) if c != value]
    if name in ("model", "labeller", "oracle") and isinstance(value, str) and path[0] != "models":
        return [m for m in models if m != value]
    if "template" in name:
        packaged = ("judge", "judge_strict", "judge_brief", "judge_first", "refine_one", "refine_all", "clean",
                    "clean_first", "pairwise", "oracle_label")
        copy_ = [str(template_dir / f"{value}.txt")] if template_dir is not None else []
        return [t for t in packaged if t != value] + copy_
    if name == "accelerate_config":
        return ["config/accelerate/zero2.yaml"]
    if path == ("questions", "path"):
        return ["data/questions-copy.jsonl"]
    if name == "logprobs":  # bool | "auto"
        return [c for c in (True, False, "auto") if c != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, 1, 2, value * 2]
    if isinstance(value, float):
        return [round(value * 0.5, 6) if value else 0.5, round(value + 0.05, 6)]
    if isinstance(value, str):
        literal = _literal_choices(path, validated)
        if literal:
            return [c for c in literal if c != value]
        if name in ("criterion_id",):
            return [value + "x"]
        if name == "loss_type":  # one of TRL's DPO losses, or several
            return ["ipo", ["sigmoid", "sft"]]
        return [value + "-changed", "http://127.0.0.1:9/v1" if name == "base_url" else value + "x"]
    if value is None:
        return {"system_prompt": ["Be brief."], "bf16": [False], "limit": [3], "max_prompt_chars": [None],
                "base_url": ["http://127.0.0.1:9/v1"], "api_key_env": ["SOME_KEY"], "port": [8999],
                "j": [[1]], "mem_mb": [1000], "threads": [2], "runtime": [5],
                "max_steps": [None], "tasks": ["data/tasks.txt"], "threshold": [0.9], "pca": [4],
                "layers": [[-1]], "effect": [0.1], "replicates": [2], "price": [{"input": 1.0, "output": 2.0}],
                "max_cost": [5.0], "loss_weights": [[1.0]],
                "holistic_criterion": ["The response follows every instruction of the question."]}.get(name, [])
    if isinstance(value, list) and value:
        return [value[:-1], value + value[-1:], list(reversed(value))] if len(value) > 1 else [value + value]
    if isinstance(value, list) and not value:
        return [["*.idris.fr"]] if name == "internal_hosts" else []
    if isinstance(value, dict) and not value:
        return {"extra": [{"max_grad_norm": 0.5}], "rules": [{"sample_responses": {"threads": 2}}],
                "stages": [{"label_oracle": 5.0}],
                "strategy_options": [{"lookahead": 64}],
                "kwargs": [{"startend:end_checker": {"end_phrase": "Any questions?"}}]}.get(name, [{"x": 1}])
    return []


def _literal_choices(path: tuple, validated: dict) -> list:
    """The other values of a Literal setting (an enum), found through the settings classes."""
    import typing

    from judgeflow.workflow import settings as st

    shape, node = st.Settings, validated
    for p in path:
        node = node[p]
        if isinstance(shape, tuple) and shape[0] == "container":
            shape = shape[2]
            if isinstance(shape, tuple) and all(isinstance(c, type) for c in shape):  # a model: by backend
                shape = {c.model_fields["backend"].annotation.__args__[0]: c for c in shape}[node["backend"]]
            continue
        if not (isinstance(shape, type) and p in shape.model_fields):
            return []
        field = shape.model_fields[p]
        if typing.get_origin(field.annotation) is typing.Literal:
            return list(typing.get_args(field.annotation))
        shape = st._unwrap(field.annotation)
    return []


def setting_leaves(value, where: tuple = ()):
    """Every leaf setting: into sections and into the items of lists of sections (judges, criteria)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from setting_leaves(v, (*where, k))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            yield from setting_leaves(v, (*where, i))
    else:
        yield where, value


def variants(raw: dict, template_dir: Path | None = None) -> tuple[list[dict], list[str]]:
    """One changed config per leaf setting of the validated tiny config: (variants, keys left out)."""
    from judgeflow.errors import ConfigError
    from judgeflow.workflow import pipeline, settings as st
    from judgeflow.workflow.rulekit import Rules

    validated = st.validate(copy.deepcopy(raw))
    out, left_out = [], []
    for where, value in setting_leaves(validated):
        key = pipeline._key(where)
        if where[0] == "models" and where[-1] == "backend":
            left_out.append(f"{key}: another backend is another model entry (its own keys differ)")
            continue
        if key == "cleaning.answer_first" and validated["models"][validated["cleaning"]["model"]]["backend"] != "hf":
            left_out.append(f"{key}: answer-first needs an hf cleaner, and this one is served")
            continue
        if where[:2] == ("judging", "judges") and where[-1] == "kind":
            left_out.append(f"{key}: a learned judge needs a calibration split besides (test_judge_kinds.py)")
            continue
        if key == "oracle.batch" and not value:
            left_out.append(f"{key}: the Batch API needs a hosted oracle, and this one is served (test_batch.py)")
            continue
        if key in ("refining.tree_search.train_gate", "refining.tree_search.root_choice") and \
                validated["refining"]["tree_search"]["chains"] == "per_gate":
            left_out.append(f"{key}: per-gate chains train each gate's actor on its own gate's pairs and compare the "
                            "gates per question, one root each (test_tree_search.py, test_workflow.py's dry-run of "
                            "chains: shared)")
            continue
        if where[:2] == ("questions", "fields"):
            left_out.append(f"{key}: a field mapping names a field every record of the file has, in another "
                            "format than the tiny questions' (test_spar_data.py)")
            continue
        for candidate in _candidates(where, value, validated, template_dir):
            changed = _set(raw, where, candidate)
            if key == "oracle.label_all_accepted" and not candidate:  # the replay needs every label
                changed = _set(changed, ("oracle", "replay_runs"), 0)
            try:
                new = st.validate(copy.deepcopy(changed))
                Rules(new).check_before_jobs()  # a template without its stage's placeholders stops the parse
            except ConfigError:
                continue
            out.append({"name": key, "path": where, "config": changed, "old": validated, "new": new,
                        "value": value})
            break
        else:
            left_out.append(f"{key}: no other valid value found")
    return out, left_out


def expected_rules(path: tuple, old: dict, new: dict, rulegraph: list, present: set | None) -> set[str]:
    """The declaring stages and what follows them (of the rules the changed config still has)."""
    from judgeflow.workflow import pipeline

    key = pipeline._key(path)
    if key in MORE_JOBS:
        return expected_rules(("refining", "tree_search", "confidence"), old, new, rulegraph, present) | \
            (MORE_JOBS[key] & (present if present is not None else MORE_JOBS[key]))
    never = pipeline.inactive_stages(old) & pipeline.inactive_stages(new)  # in neither config's DAG
    if key in RELOCATING:
        return (set(RUN_SCOPED) - never) | ({"prepare_questions"} if key == "resources_dir" else set())
    keys = {path} | {tuple(pipeline._parts(d)) for s in (old, new) for d, src in s.derived.items() if src == key}

    def reads(w: tuple) -> bool:  # a declared leaf w covers the changed key k, or k covers w
        return any((w[:len(k)] == k and not pipeline.is_operational(w)) or
                   (k[:len(w)] == w and not pipeline.is_operational(k)) for k in keys)
    direct = set()
    for name, stage in pipeline.STAGES.items():
        if name in never:
            continue
        jobs = [{"model": m} for m in old["prepare"]["models"]] if name == "prepare_model" else [None]
        for settings in (old, new):
            for wildcards in jobs:
                try:
                    paths = pipeline.read_leaves(stage, settings, wildcards)
                except KeyError:  # the job does not exist in this config
                    continue
                if any(reads(w) for w, _ in paths):
                    direct.add(name)
    # What follows them, on the rule graph read per round: the tiny run's self-play has two rounds, and what
    # round 1's trainings make (train_round, train_refiner) or round 2 alone runs (sample_round, judge_round)
    # reaches round 2's searches only, never round 1's trainings back (the rule graph has those edges, as
    # tree_search and tree_search_gate are jobs of both rounds)
    todo = [(name, name in LATE) for name in direct]
    seen = set(todo)
    while todo:
        up, late = todo.pop()
        for a, down in rulegraph:
            if a != up or (late and down in ROUND_ONE_TRAININGS):
                continue
            nxt = (down, late or down in LATE)
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    downstream = {name for name, _ in seen} | ACTIVATES.get(key, set())
    return (downstream & present if present is not None else downstream) - {"all"}


@pytest.mark.slow
def test_every_setting_reruns_exactly_the_stages_that_read_it(tiny_run, tmp_path):
    """For every leaf setting of the tiny config (defaults included): a dry-run after changing it
    plans exactly the stages that declare it (judgeflow.workflow.pipeline), and what depends on them.
    Operational settings (timeouts, concurrency, batch sizes, checkpoint frequency) plan nothing."""
    raw = yaml.safe_load((tiny_run / "config/tiny.yaml").read_text())
    assert raw == tiny_config()
    (tiny_run / "data" / "questions-copy.jsonl").write_bytes((tiny_run / "data" / "questions.jsonl").read_bytes())
    templates = tmp_path / "templates"  # each packaged template, one line longer: another template, same fields
    templates.mkdir()
    for t in (ROOT / "src/judgeflow/prompts").glob("*.txt"):
        (templates / t.name).write_text(t.read_text() + "\n(a copy)\n")
    cases, left_out = variants(raw, templates)
    files = []
    for i, case in enumerate(cases):
        f = tmp_path / f"v{i}.yaml"
        f.write_text(yaml.safe_dump(case["config"]))
        files.append({"name": case["name"], "configfile": str(f),  # a flag or a list can change the DAG
                      "structure": isinstance(case["value"], (bool, list))})
    unchanged = {"name": "(unchanged)", "configfile": str(tiny_run / "config/tiny.yaml")}
    procs, result = [], {}
    for part in range(2):  # two processes, one per core
        (tmp_path / f"variants{part}.json").write_text(json.dumps([unchanged] + files[part::2]))
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests" / "dryrun_batch.py"), str(tiny_run),
                                       str(tmp_path / f"variants{part}.json"), str(tmp_path / f"out{part}.json")],
                                      env=dict(os.environ, SOME_KEY="placeholder-key-of-the-dry-runs")))
    for part, p in enumerate(procs):
        assert p.wait(timeout=900) == 0
        result.update(json.loads((tmp_path / f"out{part}.json").read_text()))
    rulegraph = result["__rulegraph__"]
    assert result["(unchanged)"]["ok"] and result["(unchanged)"]["jobs"] == {}, result["(unchanged)"]
    wrong = []
    for case in cases:
        got = result[case["name"]]
        planned = set(got["jobs"]) - {"all"}
        want = expected_rules(case["path"], case["old"], case["new"], rulegraph,
                              set(got["rules"]) if "rules" in got else None)
        if not got["ok"] or planned != want:
            wrong.append(f"{case['name']}: planned {sorted(planned)}, expected {sorted(want)}"
                         + ("" if got["ok"] else f"\n{got['output']}"))
    assert not wrong, f"{len(wrong)} of {len(cases)} settings:\n" + "\n".join(wrong)
    # every leaf is covered but the ones listed, each with its reason
    allowed = (r"models\.\w+\.backend|cleaning\.answer_first|oracle\.batch|judging\.judges\[\d+\]\.kind"
               r"|questions\.fields\.\w+|refining\.tree_search\.(train_gate|root_choice)")
    assert len(cases) > 140 and all(re.fullmatch(allowed, x.split(":")[0]) for x in left_out), left_out
