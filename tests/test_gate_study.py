"""The gate study (judgeflow.refining.gate_study): per-root outcomes, the paired gate comparison
(clustered bootstrap, exact McNemar, Holm), root selection and the planner, each against an
independent computation (scipy, statsmodels, the closed forms) or a seeded simulation."""
import math
import random

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from judgeflow.refining import gate_study as gs
from judgeflow.training.evaluation import ABSTAIN, INCONSISTENT, LOSS, TIE, WIN

J = 5


def records(spec, round_=1):
    """finals and comparisons from {root_id: (question_id, {gate k: state})}, a state being an oracle
    outcome (refined at depth 1), 'unsolved' or 'root' (passed at the root)."""
    finals, comps = [], []
    for rid, (qid, states) in spec.items():
        for k, state in states.items():
            gate = f"{k}of{J}"
            solved, at_root = state != "unsolved", state == "root"
            finals.append({"root_id": rid, "question_id": qid, "round": round_, "gate": gate, "k": k,
                           "solved": solved, "passed_at_root": at_root,
                           "exit_node_id": None if not solved else f"{rid}/t" if at_root else f"{rid}/t.0"})
            if solved and not at_root:
                comps.append({"gate": gate, "root_id": rid, "question_id": qid, "outcome": state})
    return finals, comps


def paired(cells, gates=(3, 5), roots_per_question=1):
    """Root outcomes with the 2x2 table `cells` {(prefer under gate a, under gate b): count}: a preferred
    root is a win, a root not preferred a loss (so the net score moves too)."""
    spec, i = {}, 0
    for (xa, xb), count in cells.items():
        for _ in range(count):
            spec[f"r{i:03d}"] = (f"q{i // roots_per_question:03d}",
                                 {gates[0]: WIN if xa else LOSS, gates[1]: WIN if xb else LOSS})
            i += 1
    return gs.root_outcomes(*records(spec))


# ------------------------------------------------------------------------------ root_outcomes


def test_root_outcomes_every_root_counts_under_every_gate():
    spec = {"a": ("q1", {3: WIN, 5: "unsolved"}), "b": ("q1", {3: "root", 5: LOSS}),
            "c": ("q2", {3: INCONSISTENT, 5: ABSTAIN}), "d": ("q3", {3: TIE, 5: WIN})}
    out = {(o["gate"], o["root_id"]): o for o in gs.root_outcomes(*records(spec))}
    assert len(out) == 8
    expect = {("3of5", "a"): ("refined", WIN, 1, 1), ("5of5", "a"): ("unsolved", "no_change", 0, 0),
              ("3of5", "b"): ("passed_at_root", "no_change", 0, 0), ("5of5", "b"): ("refined", LOSS, 0, -1),
              ("3of5", "c"): ("refined", INCONSISTENT, 0, 0), ("5of5", "c"): ("refined", ABSTAIN, 0, 0),
              ("3of5", "d"): ("refined", TIE, 0, 0), ("5of5", "d"): ("refined", WIN, 1, 1)}
    for key, (status, outcome, prefer, net) in expect.items():
        o = out[key]
        assert (o["status"], o["outcome"], o["prefer"], o["net"]) == (status, outcome, prefer, net), key
        assert o["question_id"] == spec[key[1]][0] and o["k"] == int(key[0][0])


def test_root_outcomes_match_rounds_and_refuse_what_does_not_fit():
    f1, c1 = records({"a": ("q1", {3: WIN})}, round_=1)
    f2, c2 = records({"a": ("q1", {3: LOSS})}, round_=2)
    with pytest.raises(ValueError, match="no `round`"):  # root a is in both rounds: ambiguous
        gs.root_outcomes(f1 + f2, c1 + c2)
    out = gs.root_outcomes(f1 + f2, [{**c1[0], "round": 1}, {**c2[0], "round": 2}])
    assert [(o["round"], o["outcome"]) for o in out] == [(1, WIN), (2, LOSS)]
    finals, comps = records({"a": ("q1", {3: WIN}), "b": ("q1", {3: "unsolved"})})
    with pytest.raises(ValueError, match="refined but not compared"):
        gs.root_outcomes(finals, [])
    with pytest.raises(ValueError, match="compared by the oracle but unsolved"):
        gs.root_outcomes(finals, comps + [{**comps[0], "root_id": "b"}])
    with pytest.raises(ValueError, match="two records"):
        gs.root_outcomes(finals, comps + comps)
    with pytest.raises(ValueError, match="unknown outcome"):
        gs.root_outcomes(finals, [{**comps[0], "outcome": "better"}])
    with pytest.raises(ValueError, match="has no final"):
        gs.root_outcomes(finals, comps + [{**comps[0], "root_id": "zzz"}])


# ------------------------------------------------------------------------------ compare_gates


def test_mcnemar_on_a_constructed_table_matches_scipy_and_statsmodels():
    # 10 preferred under both, 12 under 3of5 only, 3 under 5of5 only, 15 under neither
    out = paired({(1, 1): 10, (1, 0): 12, (0, 1): 3, (0, 0): 15})
    (row,) = gs.compare_gates(out, n_boot=500)
    assert (row["gate_a"], row["gate_b"], row["n_roots"], row["n_questions"]) == ("3of5", "5of5", 40, 40)
    assert (row["discordant_b"], row["discordant_c"]) == (12, 3)
    assert row["mcnemar_p"] == pytest.approx(binomtest(12, 15, 0.5).pvalue, rel=1e-12)
    assert row["mcnemar_p"] == pytest.approx(mcnemar([[10, 12], [3, 15]], exact=True).pvalue, rel=1e-12)
    assert row["prefer_a"] == pytest.approx(22 / 40) and row["prefer_b"] == pytest.approx(13 / 40)
    assert row["diff"] == pytest.approx(-9 / 40) and row["discordance"] == pytest.approx(15 / 40)
    assert row["net_diff"] == pytest.approx(2 * -9 / 40)  # win -> loss moves the net score by 2
    assert row["diff_ci_low"] < row["diff"] < row["diff_ci_high"] < 0
    assert row["mcnemar_p"] < 0.05 and row["verdict"].startswith("5of5 lowers")


def test_a_null_result_is_stated_as_one():
    (row,) = gs.compare_gates(paired({(1, 1): 10, (1, 0): 3, (0, 1): 2, (0, 0): 15}), n_boot=500)
    assert row["mcnemar_p"] == pytest.approx(binomtest(3, 5, 0.5).pvalue)
    assert row["verdict"].startswith("no significant difference between 3of5 and 5of5 at alpha=0.05")
    assert "lowers" not in row["verdict"] and "raises" not in row["verdict"]
    (none,) = gs.compare_gates(paired({(1, 1): 4, (0, 0): 4}), n_boot=200)  # no discordant root
    assert none["mcnemar_p"] == 1.0 and none["verdict"].startswith("no significant difference")
    # no root differs: not a zero-width interval but the exact bound on the share that differs (0 of 8)
    assert none["diff_ci_high"] == -none["diff_ci_low"] == pytest.approx(1 - 0.025 ** (1 / 8))


def test_holm_over_the_gate_pairs_matches_multipletests():
    spec, i = {}, 0
    # three gates: 2of5 prefers most, 3of5 a little less, 5of5 much less: three different raw p-values
    for xs, count in {(1, 1, 1): 6, (1, 1, 0): 14, (1, 0, 0): 4, (0, 1, 0): 1, (1, 0, 1): 2, (0, 0, 0): 13}.items():
        for _ in range(count):
            spec[f"r{i:02d}"] = (f"q{i:02d}", {k: WIN if x else LOSS for k, x in zip((2, 3, 5), xs)})
            i += 1
    rows = gs.compare_gates(gs.root_outcomes(*records(spec)), n_boot=200)
    assert [(r["gate_a"], r["gate_b"]) for r in rows] == [("2of5", "3of5"), ("2of5", "5of5"), ("3of5", "5of5")]
    raw = [r["mcnemar_p"] for r in rows]
    assert len(set(raw)) == 3
    expect = multipletests(raw, alpha=0.05, method="holm")[1]
    assert [r["mcnemar_p_holm"] for r in rows] == pytest.approx(list(expect), rel=1e-12)
    assert any(h > p for h, p in zip(expect, raw)) and all(r["holm_family"] == 3 for r in rows)
    plain = gs.compare_gates(gs.root_outcomes(*records(spec)), n_boot=200, holm=False)
    assert all(r["mcnemar_p_holm"] is None for r in plain)
    assert "Holm" not in plain[0]["verdict"] and "Holm" in rows[0]["verdict"]


def test_gates_with_different_roots_are_refused():
    out = paired({(1, 0): 3, (0, 0): 3})
    with pytest.raises(ValueError, match="different roots"):
        gs.compare_gates([o for o in out if not (o["gate"] == "5of5" and o["root_id"] == "r000")])
    with pytest.raises(ValueError, match="confidence"):
        gs.compare_gates(out, confidence=1.0)


def test_per_gate_chains_are_compared_per_question_a_missing_root_counting_as_no_change():
    """Round 2 of per-gate chains: each gate's roots are its own actor's responses (different root ids).
    The unit is the question: a question one chain did not root (its responses all passed) counts there as
    no change, as a root that passed at the start does; two roots of one question are refused."""
    # chain 3of5: q0 win, q1 loss, q2 win; chain 5of5: q0 loss, q1 win, q3 win (q2 not rooted there)
    a_fin, a_cmp = records({"a0": ("q0", {3: WIN}), "a1": ("q1", {3: LOSS}), "a2": ("q2", {3: WIN})}, round_=2)
    b_fin, b_cmp = records({"b0": ("q0", {5: LOSS}), "b1": ("q1", {5: WIN}), "b3": ("q3", {5: WIN})}, round_=2)
    for f in a_fin:
        f["chain"] = "3of5"
    for f in b_fin:
        f["chain"] = "5of5"
    out = gs.root_outcomes(a_fin + b_fin, [{**c, "round": 2} for c in a_cmp + b_cmp])
    [row] = gs.compare_gates(out, n_boot=200)
    assert row["paired_by"] == "question" and row["n_roots"] == row["n_questions"] == 4  # q0..q3
    # prefer under 3of5: q0, q2 (2 of 4); under 5of5: q1, q3 (2 of 4); discordant: q0, q2 | q1, q3
    assert (row["prefer_a"], row["prefer_b"], row["discordant_b"], row["discordant_c"]) == (0.5, 0.5, 2, 2)
    assert row["mcnemar_p"] == pytest.approx(binomtest(2, 4, 0.5).pvalue)
    assert "discordant questions of 4" in row["verdict"]
    # the unchained round 1 keeps its root pairing
    assert gs.compare_gates(paired({(1, 0): 2, (0, 0): 2}), n_boot=200)[0]["paired_by"] == "root"
    twice, twice_cmp = records({"b4": ("q0", {5: WIN})}, round_=2)
    twice[0]["chain"] = "5of5"
    more = gs.root_outcomes(a_fin + b_fin + twice, [{**c, "round": 2} for c in a_cmp + b_cmp + twice_cmp])
    with pytest.raises(ValueError, match=r"question q0 has two roots.*one_per_question"):
        gs.compare_gates(more, n_boot=200)


def test_clustered_interval_is_wider_when_a_questions_roots_agree():
    # two roots per question with identical outcomes: 40 questions, 80 roots
    cells = {(1, 1): 20, (1, 0): 24, (0, 1): 8, (0, 0): 28}
    clustered = paired(cells, roots_per_question=2)
    naive = [{**o, "question_id": o["root_id"]} for o in clustered]  # every root its own cluster
    (c,) = gs.compare_gates(clustered, n_boot=2000, seed=3)
    (n,) = gs.compare_gates(naive, n_boot=2000, seed=3)
    assert (c["n_questions"], n["n_questions"], c["diff"]) == (40, 80, n["diff"])
    width_c, width_n = c["diff_ci_high"] - c["diff_ci_low"], n["diff_ci_high"] - n["diff_ci_low"]
    assert width_c > 1.25 * width_n  # about sqrt(2): half the independent units
    assert c["net_diff_ci_high"] - c["net_diff_ci_low"] > 1.25 * (n["net_diff_ci_high"] - n["net_diff_ci_low"])


def test_clustered_interval_covers_the_true_difference():
    rng = np.random.default_rng(11)
    p10, p01, truth, reps, nq = 0.25, 0.10, -0.15, 150, 30
    covered = {"question": 0, "root": 0}
    for _ in range(reps):
        per_question = rng.choice([-1.0, 1.0, 0.0], size=nq, p=[p10, p01, 1 - p10 - p01])
        values = np.repeat(per_question, 2)  # two roots per question, perfectly correlated
        for unit, clusters in (("question", np.repeat(np.arange(nq), 2)), ("root", np.arange(2 * nq))):
            lo, hi, _ = gs.clustered_bootstrap_ci(values, clusters, 0.95, n_boot=999, seed=int(rng.integers(1 << 30)))
            covered[unit] += lo <= truth <= hi
    assert covered["question"] / reps >= 0.9
    assert covered["root"] < covered["question"] - 0.05 * reps  # the root-level bootstrap under-covers


def test_clustered_bootstrap_edge_cases():
    assert gs.clustered_bootstrap_ci([1.0, 0.0], ["q", "q"]) == (None, None, "none")
    assert gs.clustered_bootstrap_ci([0.0] * 6, list("aabbcc"))[:2] == (0.0, 0.0)


# ------------------------------------------------------------------------------ select_roots


ROOTS = [{"response_id": f"{q}/{i}", "question_id": q} for q, n in (("q1", 3), ("q2", 1), ("q3", 4), ("q4", 2))
         for i in range(n)]


def test_one_per_question_is_seeded_order_independent_and_keeps_one_per_question():
    picked = gs.select_roots(ROOTS, "one_per_question", seed=7)
    assert sorted(r["question_id"] for r in picked) == ["q1", "q2", "q3", "q4"]
    assert picked == gs.select_roots(ROOTS, "one_per_question", seed=7)
    shuffled = ROOTS[:]
    random.Random(0).shuffle(shuffled)
    assert {r["response_id"] for r in gs.select_roots(shuffled, "one_per_question", seed=7)} == \
        {r["response_id"] for r in picked}
    choices = {tuple(r["response_id"] for r in gs.select_roots(ROOTS, "one_per_question", seed=s)) for s in range(20)}
    assert len(choices) > 5  # the seed matters
    firsts = [gs.select_roots(ROOTS, "one_per_question", seed=s)[0]["response_id"] for s in range(600)]
    assert {f: firsts.count(f) for f in set(firsts)}.keys() == {"q1/0", "q1/1", "q1/2"}
    assert all(150 < firsts.count(f) < 250 for f in set(firsts))  # uniform over q1's three roots


def test_select_roots_all_and_bad_mode():
    assert gs.select_roots(ROOTS, "all", seed=1) == ROOTS
    assert gs.select_roots([], "one_per_question", seed=1) == []
    with pytest.raises(ValueError, match=r"refining\.tree_search\.root_choice"):
        gs.select_roots(ROOTS, "one", seed=1)
    with pytest.raises(ValueError, match="twice"):
        gs.select_roots(ROOTS + ROOTS[:1], "one_per_question", seed=1)


# ------------------------------------------------------------------------------ the planner


def connor(effect, psi, alpha=0.05, power=0.8):
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return (za * math.sqrt(psi) + zb * math.sqrt(psi - effect ** 2)) ** 2 / effect ** 2


@pytest.mark.parametrize("effect,psi,alpha,power", [(0.1, 0.3, 0.05, 0.8), (0.05, 0.2, 0.05, 0.9),
                                                    (0.2, 0.2, 0.01, 0.8), (0.15, 0.6, 0.1, 0.5)])
def test_mcnemar_size_is_connors_closed_form(effect, psi, alpha, power):
    n = gs.mcnemar_size(effect, psi, alpha, power)
    assert n == pytest.approx(connor(effect, psi, alpha, power), rel=1e-9)
    plan = gs.plan_gates(effect, psi, alpha=alpha, power=power)
    assert plan["paired"]["n_roots"] == math.ceil(connor(effect, psi, alpha, power))
    # the power at the planned n: Connor's normal approximation, its inverse
    za = norm.ppf(1 - alpha / 2)
    expect = norm.cdf((effect * math.sqrt(n) - za * math.sqrt(psi)) / math.sqrt(psi - effect ** 2))
    assert gs.achieved_power(math.ceil(n), effect, psi, alpha) >= power - 1e-9
    assert gs.achieved_power(math.floor(n), effect, psi, alpha) < power
    assert expect == pytest.approx(power, abs=1e-6)
    # achieved_power counts both rejection tails (the far one matters at low power only)
    m, sd = math.ceil(n), math.sqrt(psi - effect ** 2)
    both = norm.cdf((effect * math.sqrt(m) - za * math.sqrt(psi)) / sd) + \
        norm.cdf((-effect * math.sqrt(m) - za * math.sqrt(psi)) / sd)
    assert gs.achieved_power(m, effect, psi, alpha) == pytest.approx(both, rel=1e-9)


def test_planned_n_gives_about_the_target_power_with_the_exact_test():
    rng = np.random.default_rng(2024)
    cache = {}

    def power_at(n, p10, p01, reps=1500):
        hits = 0
        for b, c, _ in rng.multinomial(n, [p10, p01, 1 - p10 - p01], size=reps):
            if (b, c) not in cache:
                cache[(b, c)] = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
            hits += cache[(b, c)] < 0.05
        return hits / reps

    effect, psi = 0.1, 0.3
    n = gs.plan_gates(effect, psi)["paired"]["n_roots"]
    p10, p01 = (psi + effect) / 2, (psi - effect) / 2
    at_n, at_half = power_at(n, p10, p01), power_at(n // 2, p10, p01)
    # the exact test is conservative: a little below the normal approximation's 0.8 (about 0.77)
    assert 0.72 <= at_n <= 0.86
    assert at_half < 0.6
    assert at_half == pytest.approx(gs.achieved_power(n // 2, effect, psi), abs=0.08)


def test_unpaired_size_is_the_classic_formula_356_per_group():
    plan = gs.plan_gates(0.1, 0.3, baseline=0.7)
    p1, p2 = 0.7, 0.6
    pbar = (p1 + p2) / 2
    classic = (norm.ppf(0.975) * math.sqrt(2 * pbar * (1 - pbar))
               + norm.ppf(0.8) * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    assert plan["unpaired"]["n_exact"] == pytest.approx(classic, rel=1e-9)  # 355.94
    assert plan["unpaired"]["n_per_gate"] == 356 and plan["unpaired"]["n_total"] == 712  # rounded up
    assert (plan["unpaired"]["p_a"], plan["unpaired"]["p_b"]) == (0.7, pytest.approx(0.6))
    worst = gs.plan_gates(0.1, 0.3)["unpaired"]
    assert (worst["p_a"], worst["p_b"]) == (pytest.approx(0.55), pytest.approx(0.45))
    assert worst["n_per_gate"] > 356 and worst["baseline_from"].startswith("worst case")
    assert gs.plan_gates(0.1, 0.3, baseline=0.05)["unpaired"]["p_b"] == pytest.approx(0.15)


def test_plan_from_a_pilot_of_root_outcomes_or_comparison_rows():
    out = paired({(1, 1): 10, (1, 0): 12, (0, 1): 3, (0, 0): 15})
    plan = gs.plan_gates(0.1, pilot=out)
    assert plan["discordance"] == pytest.approx(15 / 40) and plan["discordance_from"].startswith("pilot")
    assert plan["paired"]["n_roots"] == math.ceil(connor(0.1, 15 / 40))
    pilot = plan["pilot"]
    assert (pilot["n_roots"], pilot["discordant_b"], pilot["discordant_c"]) == (40, 12, 3)
    assert pilot["achieved_power"] == pytest.approx(gs.achieved_power(40, 0.1, 15 / 40))
    assert pilot["observed_effect"] == pytest.approx(9 / 40)
    assert plan["unpaired"]["p_a"] == pytest.approx(22 / 40) and plan["unpaired"]["baseline_from"] == "pilot"
    # the same pilot as compare_gates rows read back from a CSV (numbers as text)
    rows = [{k: str(v) for k, v in r.items()} for r in gs.compare_gates(out, n_boot=100)]
    again = gs.plan_gates(0.1, pilot=rows)
    assert again["paired"] == plan["paired"] and again["unpaired"] == plan["unpaired"]
    flipped = gs.plan_gates(0.1, pilot=rows, gates=["5of5", "3of5"])["pilot"]
    assert (flipped["gate_a"], flipped["discordant_b"], flipped["discordant_c"]) == ("5of5", 3, 12)
    assert flipped["prefer_a"] == pytest.approx(13 / 40)


@pytest.mark.parametrize("kwargs,name", [
    ({"effect": 0.0, "discordance": 0.3}, "effect"), ({"effect": 1.0, "discordance": 1.0}, "effect"),
    ({"effect": -0.1, "discordance": 0.3}, "effect"), ({"effect": 0.2, "discordance": 0.1}, "discordance"),
    ({"effect": 0.1, "discordance": 1.2}, "discordance"), ({"effect": 0.1}, "discordance"),
    ({"effect": 0.1, "discordance": 0.3, "alpha": 0.0}, "alpha"),
    ({"effect": 0.1, "discordance": 0.3, "alpha": 1.0}, "alpha"),
    ({"effect": 0.1, "discordance": 0.3, "power": 1.0}, "power"),
    ({"effect": 0.1, "discordance": 0.3, "power": 0.0}, "power"),
    ({"effect": 0.1, "discordance": 0.3, "baseline": 1.5}, "baseline"),
    ({"effect": 0.1, "discordance": 0.3, "pilot": [{"gate": "3of5"}]}, "discordance"),
])
def test_plan_gates_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError) as e:
        gs.plan_gates(**kwargs)
    assert str(e.value).startswith(name)


def test_bad_pilots_and_powers():
    out = paired({(1, 1): 10, (1, 0): 1, (0, 1): 1, (0, 0): 28})  # discordance 0.05
    with pytest.raises(ValueError, match=r"^pilot: its discordance rate 0\.05 is below effect 0\.1"):
        gs.plan_gates(0.1, pilot=out)
    with pytest.raises(ValueError, match=r"^pilot: neither"):
        gs.plan_gates(0.1, pilot=[{"x": 1}])
    three = gs.root_outcomes(*records({"a": ("q", {2: WIN, 3: LOSS, 5: LOSS})}))
    with pytest.raises(ValueError, match=r"^gates: the pilot has 3 gate pairs"):
        gs.plan_gates(0.1, pilot=three)
    with pytest.raises(ValueError, match=r"^gates: the pilot has no pair"):
        gs.plan_gates(0.1, pilot=three, gates=["1of5", "5of5"])
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match=r"^n must"):
            gs.achieved_power(bad, 0.1, 0.3)
    with pytest.raises(ValueError, match=r"^p_a and p_b must differ"):
        gs.unpaired_size(0.5, 0.5)


def test_no_root_that_differs_gives_the_exact_bound_not_a_zero_width_interval():
    """40 roots, the same outcome under both gates: the bootstrap has nothing to resample ([0, 0] would read
    as certainty); the interval is the Clopper-Pearson bound on the share of roots that differ, 0 of 40."""
    from scipy.stats import binomtest

    from judgeflow.refining.gate_study import compare_gates

    outcomes = [{"round": 1, "gate": g, "k": k, "root_id": f"q{i}/r0", "question_id": f"q{i}",
                 "prefer": int(i < 3), "net": int(i < 3)} for i in range(40) for g, k in (("2of3", 2), ("3of3", 3))]
    (row,) = compare_gates(outcomes, 0.95, 500, 0)
    upper = binomtest(0, 40).proportion_ci(0.95, method="exact").high
    assert row["diff"] == 0 and row["diff_ci_low"] == pytest.approx(-upper)
    assert row["diff_ci_high"] == pytest.approx(upper)
    assert row["ci_method"] == "exact bound (no root differs)" and row["diff_ci_high"] > 0.08
    assert row["net_diff_ci_high"] == pytest.approx(2 * upper)
