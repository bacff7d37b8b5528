"""Replicates (`replicates`): the whole study once per seed as the wildcard {seed}, and the aggregate of
its headlines across seeds (judgeflow.replicates). The aggregate is checked against scipy's t-interval
computed here and against each seed's own summary files; the replicated run is real (the 135M model,
real Snakemake), two seeds of the smallest whole study."""
from __future__ import annotations

import json
import math
import statistics

import pandas as pd
import pytest
import yaml
from scipy import stats

from judgeflow import replicates as rep
from judgeflow.errors import ConfigError
from judgeflow.workflow import settings as jf_settings

from project import ifbench_questions, planned_jobs, replicated_config, smk, tiny_config, write_tiny_project

# ---------------------------------------------------------------------------------- the aggregate


def test_mean_and_t_interval_across_seeds_match_scipy():
    values = {7: 0.10, 8: 0.25, 9: 0.05, 10: 0.30}
    [a] = rep.aggregate({s: [rep.Headline("g", "h", v)] for s, v in values.items()})
    r = a.row()
    xs = list(values.values())
    m, sd = statistics.mean(xs), statistics.stdev(xs)
    half = stats.t.ppf(0.975, len(xs) - 1) * sd / math.sqrt(len(xs))
    assert r["mean"] == pytest.approx(m) and r["sd"] == pytest.approx(sd)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(m - half), pytest.approx(m + half))
    assert r["seeds"] == r["seeds_with_value"] == 4 and r["interval"] == "t-interval of the mean across seeds"
    assert r["values"] == "0.1 0.25 0.05 0.3"


def test_an_interval_past_a_shares_range_is_clipped_to_it():
    """A share near 1 over three seeds: the t-interval passes 1; the mean is a share, so [lo, 1] covers it
    whenever [lo, hi] does."""
    values = {1: 0.6, 2: 1.0, 3: 1.0}
    [a] = rep.aggregate({s: [rep.Headline("g", "solved", v, rep.SHARE)] for s, v in values.items()})
    lo, hi = stats.t.interval(0.95, 2, loc=statistics.mean(values.values()),
                              scale=statistics.stdev(values.values()) / math.sqrt(3))
    assert hi > 1 and a.row()["ci_high"] == 1.0 and a.row()["ci_low"] == pytest.approx(lo)
    assert a.row()["interval"].endswith("clipped to the headline's range")
    [free] = rep.aggregate({s: [rep.Headline("g", "x", v)] for s, v in values.items()})
    assert free.row()["ci_high"] == pytest.approx(hi)  # no range: as scipy gives it


def test_a_seed_without_a_value_is_left_out_and_no_spread_gives_no_interval():
    per_seed = {1: [rep.Headline("g", "a", 1.0), rep.Headline("g", "b", 2.0)],
                2: [rep.Headline("g", "a", 3.0), rep.Headline("g", "b", None)],
                3: [rep.Headline("g", "a", 2.0)]}  # seed 3's run has no b at all
    a, b = rep.aggregate(per_seed)
    assert a.row()["seeds_with_value"] == 3 and a.row()["mean"] == pytest.approx(2.0)
    rb = b.row()
    assert rb["seeds"] == 3 and rb["seeds_with_value"] == 1 and rb["mean"] == 2.0
    assert rb["ci_low"] is None and rb["interval"].startswith("none: fewer than 2") and rb["values"] == "2 n/a n/a"
    # the same value under every seed: no zero-width interval (it would read as certainty)
    [same] = rep.aggregate({s: [rep.Headline("g", "c", 0.0)] for s in (1, 2, 3)})
    assert same.row()["ci_low"] is None and same.row()["interval"] == "none: every seed gave the same value"


def test_headlines_read_each_summary_file(tmp_path):
    ts = {"gates": [{"round": 1, "gate": "1of2", "win_rate": 0.5, "solve_rate": 0.4},
                    {"round": 2, "gate": "1of2", "win_rate": 0.75, "solve_rate": 0.6},
                    {"round": 2, "gate": "2of2", "win_rate": None, "solve_rate": 0.2}],
          "gate_pairs": [{"round": 1, "gate_a": "1of2", "gate_b": "2of2", "diff": 0.9, "discordance": 0.9},
                         {"round": 2, "gate_a": "1of2", "gate_b": "2of2", "diff": -0.125, "discordance": 0.25}]}
    (tmp_path / "ts.json").write_text(json.dumps(ts))
    (tmp_path / "nstar.json").write_text(json.dumps({"nstar": 3, "calls": 41, "tp_trend": {"slope": -0.1}}))
    pd.DataFrame({"n": [1, 2, 3], "labelled": [10, 4, 0], "tp": [0.8, 0.5, None]}).to_csv(tmp_path / "c.csv")
    hs = {h.name: h.value for h in rep.headlines({"tree_search": str(tmp_path / "ts.json"),
                                                  "nstar": str(tmp_path / "nstar.json"),
                                                  "curve": str(tmp_path / "c.csv"),
                                                  "pairs": str(tmp_path / "missing.json")})}
    # the last round only; a gate without decided roots has no win rate; N without labels has no TP
    assert hs["2of2 - 1of2: difference in the share of roots whose final the oracle prefers (round 2)"] == -0.125
    assert hs["gate 1of2: oracle's preference of final over original, on its decided solved roots (round 2)"] == 0.75
    assert hs["gate 2of2: oracle's preference of final over original, on its decided solved roots (round 2)"] is None
    assert hs["certified N*"] == 3 and hs["oracle calls to certify N*"] == 41
    assert hs["TP(1) on the labelled accepted draws"] == 0.8 and "TP(3) on the labelled accepted draws" not in hs
    assert not any("pairs" in name for name in hs)  # a file that is not there gives nothing


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("value, key, words", [
    (0, "replicates", ">= 1"), ([], "replicates", "empty list"), ([3, 5, 3], "replicates[2]", "listed twice"),
    ([4, -1], "replicates[1]", "negative"), ("three", "replicates", "")])
def test_bad_replicates_name_the_key(value, key, words):
    with pytest.raises(ConfigError) as e:
        jf_settings.validate({**tiny_config(), "replicates": value})
    assert str(e.value).split(": ")[0].endswith(key) and words in str(e.value)


def test_replicates_r_are_the_seeds_from_the_runs_seed():
    s = jf_settings.Settings.model_validate(dict(jf_settings.validate({**tiny_config(), "replicates": 3})))
    assert jf_settings.replicate_seeds(s) == [7, 8, 9]
    s = jf_settings.Settings.model_validate(dict(jf_settings.validate({**tiny_config(), "replicates": [5, 2]})))
    assert jf_settings.replicate_seeds(s) == [5, 2]


# ---------------------------------------------------------------------------------- the workflow


def test_dry_run_plans_the_study_once_per_seed_and_one_aggregate(tmp_path):
    """Every stage of the study once per seed, in results/<run>/seed-<s>/; a job's seed is its
    replicate's (the recorded settings, the rerun trigger); one aggregate over the seeds."""
    cfg = {**replicated_config(), "replicates": [7, 11]}
    proj = write_tiny_project(tmp_path / "p", cfg)
    path, single = proj / "config" / "tiny.yaml", proj / "config" / "one.yaml"
    single.write_text(yaml.safe_dump({**cfg, "replicates": None}))
    one = planned_jobs(smk(proj, "-n", "--quiet", "rules", configfile=single).stdout)
    two = planned_jobs(smk(proj, "-n", "--quiet", "rules", configfile=path).stdout)
    assert "aggregate_replicates" not in one and two.pop("aggregate_replicates") == 1
    for rule in ("prepare_model", "prepare_questions"):  # the model and the questions file are shared
        assert two.pop(rule) == one.pop(rule), rule
    assert two.pop("all") == one.pop("all") == 1
    assert two == {rule: 2 * n for rule, n in one.items()}, (one, two)
    out = smk(proj, "-n", "-p", "--forceall", "--until", "sample_responses", configfile=path).stdout
    assert "results/reps/seed-7/responses/shard-0.jsonl" in out and "results/reps/seed-11/responses" in out
    from judgeflow.workflow import pipeline

    c = jf_settings.validate(cfg)
    assert pipeline.params(pipeline.STAGES["sample_responses"], c, {"shard": "0", "seed": "11"})["seed"] == 11
    assert pipeline.params(pipeline.STAGES["sample_responses"], c, {"shard": "0", "seed": "7"})["seed"] == 7


@pytest.mark.slow
def test_a_replicated_study_aggregates_its_headlines_across_seeds(tmp_path):
    """`replicates: 2` on the smallest whole study, run to the end: two runs that differ (each seed
    draws its own responses), each with its own report, and the aggregate: each headline's per-seed
    values are those of that seed's own summary files, the mean and t-interval those of the values."""
    proj = write_tiny_project(tmp_path / "p", replicated_config(), ifbench_questions(8))
    path = proj / "config" / "tiny.yaml"
    smk(proj, "--cores", "2", configfile=path, timeout=2400)
    res = proj / "results" / "reps"
    seeds = [7, 8]  # two: the fewest with a t-interval (each seed is the whole study: CI time)
    for s in seeds:
        assert (res / f"seed-{s}" / "report.html").exists() and (proj / "logs" / "reps" / f"seed-{s}").is_dir()
        assert f"replicate seed {s}" in (res / f"seed-{s}" / "report.html").read_text()
    responses = [(res / f"seed-{s}" / "responses" / "shard-0.jsonl").read_text() for s in seeds]
    assert len(set(responses)) == len(seeds)  # the seeds really differ
    agg = pd.read_csv(res / "replicates" / "aggregate.csv")
    long = pd.read_csv(res / "replicates" / "headlines.csv")
    assert set(long["seed"]) == set(seeds) and (agg["seeds"] == len(seeds)).all()
    # the headlines the issue names: the gate difference, each gate's preference, N*, TP(N)
    named = {h: agg[agg["headline"] == h].iloc[0] for h in agg["headline"]}
    diff = "2of2 - 1of2: difference in the share of roots whose final the oracle prefers (round 1)"
    assert diff in named and "certified N*" in named and "TP(1) on the labelled accepted draws" in named
    assert any(h.startswith("gate 1of2: oracle's preference") for h in named)
    # per seed, from that seed's own files
    own_diff = [json.loads((res / f"seed-{s}" / "tree_search" / "summary.json").read_text())["gate_pairs"][0]["diff"]
                for s in seeds]
    own_nstar = [json.loads((res / f"seed-{s}" / "oracle" / "nstar.json").read_text()) for s in seeds]
    for name, own in ((diff, own_diff), ("certified N*", [n["nstar"] for n in own_nstar]),
                      ("oracle calls to certify N*", [n["calls"] for n in own_nstar])):
        got = long[long["headline"] == name].sort_values("seed")["value"].tolist()
        assert got == pytest.approx([float(v) for v in own]), name
        r = named[name]
        assert r["mean"] == pytest.approx(statistics.mean(own))
        if len(set(own)) > 1:
            half = stats.t.ppf(0.975, len(own) - 1) * statistics.stdev(own) / math.sqrt(len(own))
            assert (r["ci_low"], r["ci_high"]) == (pytest.approx(r["mean"] - half), pytest.approx(r["mean"] + half))
        else:
            assert pd.isna(r["ci_low"]) and r["interval"] == "none: every seed gave the same value"
    page = (res / "replicates" / "report.html").read_text()
    assert f"mean across {len(seeds)} seeds" in page and "t-interval" in page
    summary = json.loads((res / "replicates" / "summary.json").read_text())
    assert summary["seeds"] == seeds and len(summary["headlines"]) == len(agg)
    # finished: nothing left to do; a third seed adds its own study and redoes only the aggregate
    assert "Nothing to be done" in smk(proj, "-n", configfile=path).stdout
    path.write_text(yaml.safe_dump({**replicated_config(), "replicates": [7, 8, 9]}))
    jobs = planned_jobs(smk(proj, "-n", "--quiet", "rules", configfile=path).stdout)
    assert jobs["aggregate_replicates"] == 1 and jobs["sample_responses"] == 1 and jobs["report"] == 1, jobs
