"""The `judgeflow` console script: tp-model and oracle-budget, happy paths and bad input (exit 2)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from judgeflow.oracle.tp import model
from judgeflow.workflow.cli import main

CURVE = "0.97,0.92,0.7"
BASE = ["oracle-budget", "--threshold", "0.8", "--delta", "0.05", "--runs", "4", "--seed", "1"]


def test_tp_model_table_and_json(capsys):
    assert main(["tp-model", "--a", "2", "--b", "1", "--p0", "0.2", "--p1", "0.9", "--n-max", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split() == ["n", "TP(n)", "P(N=n)", "P(N<=n)"]
    assert len(lines) == 2 + 4
    expect = model.tp_curve(4, a=2, b=1, p0=0.2, p1=0.9)
    assert [float(l.split()[1]) for l in lines[2:]] == pytest.approx(expect, abs=1e-4)
    assert main(["tp-model", "--a", "2", "--b", "1", "--p0", "0.2", "--p1", "0.9", "--n-max", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["n"] for r in doc["rows"]] == [1, 2, 3, 4]
    assert [r["tp"] for r in doc["rows"]] == pytest.approx(expect, rel=1e-12)


def test_oracle_budget_json_shape(capsys):
    assert main([*BASE, "--curve", CURVE, "--strategy", "fixed_sequence", "--budget", "50000"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["true_nstar"] == 2 and doc["curve"] == [0.97, 0.92, 0.7]
    assert len(doc["nstar"]) == 4 and len(doc["calls"]) == 4
    assert all(isinstance(n, int) and 0 <= n <= 3 for n in doc["nstar"])
    for key in ("median_calls", "p90_calls", "error_rate", "exact_rate", "nstar_counts", "strategy", "budget"):
        assert key in doc
    assert doc["median_calls"] <= doc["p90_calls"] and 0 <= doc["error_rate"] <= 1


def test_oracle_budget_all_strategies_and_options(capsys):
    assert main([*BASE, "--curve", CURVE, "--strategy", "all", "--no-runs",
                 "--option", "futility_level=0.5", "--batch-size", "16"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["strategies"]) == {"uniform", "bisection", "fixed_sequence"} and doc["true_nstar"] == 2
    for r in doc["strategies"].values():
        assert "nstar" not in r and r["runs"] == 4


@pytest.mark.parametrize("extra,arg", [
    (["--curve", "0.9,1.2"], "--curve"), (["--curve", "0.9,abc"], "--curve"), (["--curve", ""], "--curve"),
    (["--curve", "0.9,-0.1"], "--curve"),
    (["--curve", "0.9", "--threshold", "1"], "--threshold"), (["--curve", "0.9", "--threshold", "0"], "--threshold"),
    (["--curve", "0.9", "--delta", "0"], "--delta"), (["--curve", "0.9", "--delta", "1.5"], "--delta"),
    (["--curve", "0.9", "--runs", "0"], "--runs"), (["--curve", "0.9", "--option", "foo=1"], "--option"),
    (["--curve", "0.9", "--strategy", "all", "--option", "foo=1"], "--option"),
    (["--curve", "0.9", "--option", "futility_level=2"], "--option"),
])
def test_oracle_budget_bad_input_exits_2_naming_the_argument(extra, arg, capsys):
    argv = ["oracle-budget", "--threshold", "0.8", "--delta", "0.05", "--runs", "2", *extra]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"argument {arg}" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--a", "0"), ("--b", "-2"), ("--p0", "1.1"), ("--p1", "x"), ("--n-max", "0")])
def test_tp_model_bad_input_exits_2(flag, value, capsys):
    argv = {"--a": "2", "--b": "1", "--p0": "0.2", "--p1": "0.9", "--n-max": "3", flag: value}
    with pytest.raises(SystemExit) as e:
        main(["tp-model", *[x for kv in argv.items() for x in kv]])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flag}: {flag} must be " in err and f"got {value}" in err.replace("'", "")


def test_console_script_runs():
    exe = Path(sys.executable).with_name("judgeflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "judgeflow.workflow.cli"]
    bad = subprocess.run([*cmd, "oracle-budget", "--curve", "0.9,2", "--threshold", "0.8", "--delta", "0.05"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--curve" in bad.stderr
    ok = subprocess.run([*cmd, "tp-model", "--a", "1", "--b", "1", "--p0", "0.1", "--p1", "0.9", "--n-max", "2",
                         "--json"], capture_output=True, text=True)
    assert ok.returncode == 0 and len(json.loads(ok.stdout)["rows"]) == 2
