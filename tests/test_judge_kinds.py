"""Judges that learn from the calibration split, through the real workflow (issue 23): a trained judge
is fitted by train_judge on the verifier's labels of the policy's responses to the calibration
questions, measured out of fold with the prompt judges and the k-of-J aggregate, and then judges the
policy's responses like any judge."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from project import ROOT, smk

pytestmark = pytest.mark.slow  # the real model through Snakemake: sampling, features, judging


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_trained_judge_is_fitted_measured_and_used_in_the_workflow(tmp_path, model_dir):
    (tmp_path / "resources").symlink_to(ROOT / "resources")  # the prepared model (conftest) and data
    cfg = tmp_path / "judges.yaml"
    cfg.write_text(yaml.safe_dump({
        "run": "judges", "questions": {"composed": {"count": 40}, "heldout": 2},
        "sampling": {"shards": 1},
        "judging": {"k": 1, "calibration": {"questions": 24, "n_samples": 2, "folds": 3}, "judges": [
            {"id": "t1", "kind": "trained", "model": "smollm2", "layers": [-1], "pooling": ["last", "mean"]},
            {"id": "j2", "model": "smollm2", "template": "judge_brief", "answer_first": True, "max_new_tokens": 1,
             "threshold": 0.85}]},
        "refining": {"tree_search": {"gates": [{"k": 1}, {"k": 2}]}}, "oracle": {"bon": {"j": [1, 2]}}}))
    res = tmp_path / "results" / "judges"
    smk(tmp_path, "results/judges/judges/calibration.csv", "results/judges/verdicts/responses/shard-0.aggregate.jsonl",
        "--cores", "2", "--configfile", str(ROOT / "config/config.yaml"), str(cfg))

    # the splits: calibration questions are none of the questions the other stages use
    ids = {n: {q["question_id"] for q in _lines(res / f"questions/{n}.jsonl")} for n in ("kept", "heldout",
                                                                                         "calibration")}
    assert len(ids["calibration"]) == 24 and not ids["calibration"] & (ids["kept"] | ids["heldout"])
    sampled = {r["question_id"] for r in _lines(res / "responses/shard-0.jsonl")}
    assert sampled == ids["kept"]
    labels = _lines(res / "calibration/labels.jsonl")
    assert {lab["question_id"] for lab in labels} <= ids["calibration"] and {lab["x"] for lab in labels} == {0, 1}

    # the trained judge: its head, its threshold, an out-of-fold P(YES) per labelled row
    judge = json.loads((res / "judges/t1/judge.json").read_text())
    assert judge["format"] == "judgeflow-trained-judge" and judge["features"]["layers"] == [-1]
    assert judge["threshold_rule"] == "youden" and judge["training"]["n"] == len(labels)
    oof = _lines(res / "judges/t1/oof.jsonl")
    assert len(oof) == len(labels) and len({o["p_yes"] for o in oof}) > len(oof) // 2  # not a constant

    # measured on the calibration split: each judge and the aggregate, the trained one out of fold
    rows = {(r["judge"], r["criterion_kind"]): r for r in csv.DictReader((res / "judges/calibration.csv").open())}
    for j in ("t1", "j2", "k-of-J"):
        r = rows[(j, "all")]
        assert int(r["n"]) == len(labels) and r["auc"]
        assert float(r["auc_low"]) <= float(r["auc"]) <= float(r["auc_high"])
    assert rows[("t1", "all")]["out_of_fold"] == "True" and rows[("j2", "all")]["out_of_fold"] == "False"

    # then it judges the policy's responses like any judge: YES exactly when P(YES) reaches its threshold
    verdicts = [v for v in _lines(res / "verdicts/responses/shard-0.jsonl") if v["judge_id"] == "t1"]
    assert verdicts and all(v["label_from"] == "threshold" for v in verdicts)
    assert all((v["label"] == "yes") == (v["p_yes"] >= judge["threshold"]) for v in verdicts)
    log = (tmp_path / "logs" / "judges" / "judge_responses" / "shard-0.log").read_text()
    assert "'kind': 'trained'" in log  # the learned judge's stats
