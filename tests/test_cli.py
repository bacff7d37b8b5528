"""The `judgeflow` console script: tp-model and oracle-budget, happy paths and bad input (exit 2)."""
import json
import math
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


# ------------------------------------------------------------------------------ plan-gates


def _connor(effect, psi, alpha=0.05, power=0.8):
    from scipy.stats import norm

    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return (za * psi ** 0.5 + zb * (psi - effect ** 2) ** 0.5) ** 2 / effect ** 2


def test_plan_gates_text_and_json(capsys):
    assert main(["plan-gates", "--effect", "0.1", "--discordance", "0.3", "--baseline", "0.7"]) == 0
    out = capsys.readouterr().out
    assert f"{math.ceil(_connor(0.1, 0.3))} roots" in out and "234 roots" in out
    assert "356 roots per gate, 712 in all" in out and "pilot" not in out
    assert main(["plan-gates", "--effect", "0.05", "--discordance", "0.2", "--alpha", "0.01", "--power", "0.9",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["paired"]["n_roots"] == math.ceil(_connor(0.05, 0.2, 0.01, 0.9))
    assert doc["unpaired"]["baseline_from"].startswith("worst case") and doc["pilot"] is None


def _pilot_folder(root, cells):
    """results/<run>/tree_search with round-1/gate-{3of5,5of5}/final.jsonl and comparisons.jsonl: each
    root a win or a loss under each gate, as `cells` {(win under 3of5, win under 5of5): roots} says."""
    per_gate: dict = {"3of5": ([], []), "5of5": ([], [])}
    i = 0
    for (wa, wb), count in cells.items():
        for _ in range(count):
            for gate, won in (("3of5", wa), ("5of5", wb)):
                rid = f"r{i}"
                per_gate[gate][0].append({"root_id": rid, "question_id": f"q{i // 2}", "round": 1, "gate": gate,
                                          "k": int(gate[0]), "solved": True, "passed_at_root": False,
                                          "exit_node_id": f"{rid}/t.0"})
                per_gate[gate][1].append({"gate": gate, "root_id": rid, "question_id": f"q{i // 2}",
                                          "outcome": "win" if won else "loss"})
            i += 1
    for gate, (fins, comps) in per_gate.items():
        d = root / "round-1" / f"gate-{gate}"
        d.mkdir(parents=True)
        (d / "final.jsonl").write_text("".join(json.dumps(f) + "\n" for f in fins))
        (d / "comparisons.jsonl").write_text("".join(json.dumps(c) + "\n" for c in comps))
    return root


def test_plan_gates_from_a_pilot_folder_and_a_csv(tmp_path, capsys):
    import csv

    from judgeflow.refining.gate_study import achieved_power, compare_gates, root_outcomes

    tree = _pilot_folder(tmp_path / "tree_search", {(1, 1): 10, (1, 0): 12, (0, 1): 3, (0, 0): 15})
    assert main(["plan-gates", "--effect", "0.1", "--pilot", str(tree), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["discordance"] == pytest.approx(15 / 40)
    assert doc["paired"]["n_roots"] == math.ceil(_connor(0.1, 15 / 40))
    assert (doc["pilot"]["n_roots"], doc["pilot"]["discordant_b"], doc["pilot"]["discordant_c"]) == (40, 12, 3)
    assert doc["pilot"]["achieved_power"] == pytest.approx(achieved_power(40, 0.1, 15 / 40))
    assert main(["plan-gates", "--effect", "0.1", "--pilot", str(tree)]) == 0
    text = capsys.readouterr().out
    assert "pilot 3of5 vs 5of5: 40 roots, 12 preferred under 3of5 only, 3 under 5of5 only" in text
    assert f"power {achieved_power(40, 0.1, 15 / 40):.2f} to detect 0.1" in text
    # the same pilot as a gate comparison table (CSV), gates named in the other order
    finals = [json.loads(l) for g in ("3of5", "5of5") for l in (tree / f"round-1/gate-{g}/final.jsonl").open()]
    comps = [json.loads(l) for g in ("3of5", "5of5") for l in (tree / f"round-1/gate-{g}/comparisons.jsonl").open()]
    rows = compare_gates(root_outcomes(finals, comps), n_boot=100)
    path = tmp_path / "gate_pairs.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert main(["plan-gates", "--effect", "0.1", "--pilot", str(path), "--gates", "5of5", "3of5", "--json"]) == 0
    flipped = json.loads(capsys.readouterr().out)
    assert flipped["paired"] == doc["paired"]
    assert (flipped["pilot"]["gate_a"], flipped["pilot"]["discordant_b"], flipped["pilot"]["discordant_c"]) == \
        ("5of5", 3, 12)


@pytest.mark.parametrize("extra,arg", [
    (["--effect", "0", "--discordance", "0.3"], "--effect"), (["--effect", "1", "--discordance", "0.3"], "--effect"),
    (["--effect", "x", "--discordance", "0.3"], "--effect"),
    (["--effect", "0.2", "--discordance", "0.1"], "--discordance"),
    (["--effect", "0.1", "--discordance", "1.5"], "--discordance"), (["--effect", "0.1"], "--discordance"),
    (["--effect", "0.1", "--discordance", "0.3", "--pilot", "x.jsonl"], "--discordance"),
    (["--effect", "0.1", "--discordance", "0.3", "--alpha", "1"], "--alpha"),
    (["--effect", "0.1", "--discordance", "0.3", "--power", "0"], "--power"),
    (["--effect", "0.1", "--discordance", "0.3", "--baseline", "2"], "--baseline"),
    (["--effect", "0.1", "--discordance", "0.3", "--gates", "3of5", "5of5"], "--gates"),
    (["--effect", "0.1", "--pilot", "no/such/file.jsonl"], "--pilot"),
])
def test_plan_gates_bad_input_exits_2_naming_the_argument(extra, arg, capsys):
    with pytest.raises(SystemExit) as e:
        main(["plan-gates", *extra])
    assert e.value.code == 2
    assert f"argument {arg}" in capsys.readouterr().err


def test_plan_gates_pilot_errors_name_the_argument(tmp_path, capsys):
    tree = _pilot_folder(tmp_path / "low", {(1, 1): 10, (1, 0): 1, (0, 0): 29})  # discordance 1/40
    with pytest.raises(SystemExit) as e:
        main(["plan-gates", "--effect", "0.1", "--pilot", str(tree)])
    assert e.value.code == 2 and "argument --pilot: pilot: its discordance rate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["plan-gates", "--effect", "0.02", "--pilot", str(tree), "--gates", "1of5", "5of5"])
    assert e.value.code == 2 and "argument --gates: gates: the pilot has no pair" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["plan-gates", "--effect", "0.1", "--pilot", str(tmp_path / "empty")])
    assert e.value.code == 2 and "has no round-*/gate-*/final.jsonl" in capsys.readouterr().err
