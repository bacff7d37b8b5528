"""Do stricter exit gates change how often the oracle prefers the final over the original? (paired)

The tree search runs several gates (e.g. 3of5 and 5of5) on the same roots (`tree_search.finals`:
one record per round, gate and root). `gates.csv` gives each gate a win rate over its own solved
roots, so two gates are never compared on the same roots. This module compares them on the same
roots:

* `root_outcomes`: per (round, gate, root) the oracle's outcome of final against original, an
  unsolved root and a root that already passed the gate counted as `no_change` (the original
  stands), and the per-root endpoint `prefer` (1: the oracle prefers the final, a `win`; 0:
  anything else), so every root counts under every gate;
* `compare_gates`: per pair of gates of a round, the paired difference in `prefer` (and in the net
  score) with a bootstrap interval clustered by question, the exact McNemar test, Holm's
  correction over the pairs, and a verdict in words;
* `select_roots`: every rejected response a root, or one per question (SPaR's choice);
* `plan_gates`, `achieved_power`: how many roots a paired design (McNemar) and an unpaired one (two
  independent proportions) need to detect a difference, and the power a run of n roots had.

Pure functions on the records; no model, no Snakemake.
"""
from __future__ import annotations

import math
import random
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations

import numpy as np

from judgeflow.generation.prompting import stable_seed
from judgeflow.training.evaluation import ABSTAIN, INCONSISTENT, LOSS, TIE, WIN

NO_CHANGE = "no_change"
OUTCOMES = (WIN, LOSS, TIE, INCONSISTENT, ABSTAIN, NO_CHANGE)
REFINED, UNSOLVED, PASSED_AT_ROOT = "refined", "unsolved", "passed_at_root"
ROOT_MODES = ("all", "one_per_question")
ROOTS_KEY = "refining.tree_search.root_choice"

OUTCOME_COLUMNS = ["round", "gate", "k", "root_id", "question_id", "status", "outcome", "prefer", "net", "chain"]
COMPARE_COLUMNS = ["round", "gate_a", "gate_b", "paired_by", "n_roots", "n_questions", "prefer_a", "prefer_b",
                   "diff", "diff_ci_low", "diff_ci_high", "net_a", "net_b", "net_diff", "net_diff_ci_low",
                   "net_diff_ci_high", "discordant_b", "discordant_c", "discordance", "mcnemar_p",
                   "mcnemar_p_holm", "holm_family", "alpha", "confidence", "ci_method", "n_boot", "seed", "verdict"]


# ------------------------------------------------------------------------------ per-root outcomes


def root_outcomes(finals: Iterable[Mapping], comparisons: Iterable[Mapping]) -> list[dict]:
    """One record per (round, gate, root): the oracle's outcome of the final against the original.

    `finals`: `tree_search.finals` records (round, gate, k, root_id, question_id, solved,
    passed_at_root); `comparisons`: `tree_search.compare_finals` records (gate, root_id, question_id,
    outcome; `round` where known: without it a comparison is matched to the one final of its gate
    and root, and a root id found in several rounds is an error).

    `status`: `refined` (solved at depth >= 1: the oracle compared final and original), `unsolved`
    (no node passed the gate) or `passed_at_root` (the original already passed: nothing refined).
    `outcome`: the comparison's win / loss / tie / inconsistent / abstain for a refined root (both
    presentation orders; `inconsistent` and `abstain` stay their own categories, never read as a
    preference), `no_change` for the other two (the original stands).

    `prefer` (the endpoint of `compare_gates`) is 1 for a win and 0 for everything else (tie, loss,
    no_change, inconsistent, abstain), so every root has a value under every gate and the gates are
    compared on one root set. `net` is +1 for a win, -1 for a loss, 0 otherwise.

    A refined root without a comparison, a comparison without a refined root, two comparisons of
    one root and gate, and an unknown outcome are ValueErrors: a silent 0 would bias the rates."""
    fins: dict[tuple[int, str, str], Mapping] = {}
    rounds_of: defaultdict[tuple[str, str], list[int]] = defaultdict(list)  # (gate, root) -> rounds
    for f in finals:
        key = (int(f["round"]), str(f["gate"]), str(f["root_id"]))
        if key in fins:
            raise ValueError(f"finals: two records for round {key[0]}, gate {key[1]}, root {key[2]}")
        fins[key] = f
        rounds_of[key[1:]].append(key[0])
    comps: dict[tuple[int, str, str], Mapping] = {}
    for c in comparisons:
        gate, rid = str(c["gate"]), str(c["root_id"])
        if c.get("round") is not None:
            rnd = int(c["round"])
        elif len(rounds_of[(gate, rid)]) == 1:
            rnd = rounds_of[(gate, rid)][0]
        elif not rounds_of[(gate, rid)]:
            raise ValueError(f"comparisons: gate {gate}, root {rid} has no final")
        else:
            raise ValueError(f"comparisons: gate {gate}, root {rid} has no `round` and matches the finals of "
                             f"rounds {sorted(rounds_of[(gate, rid)])}: give each comparison its round")
        key = (rnd, gate, rid)
        if key not in fins:
            raise ValueError(f"comparisons: round {rnd}, gate {gate}, root {rid} has no final")
        if key in comps:
            raise ValueError(f"comparisons: two records for round {rnd}, gate {gate}, root {rid}")
        if c["outcome"] not in OUTCOMES[:5]:
            raise ValueError(f"comparisons: round {rnd}, gate {gate}, root {rid}: unknown outcome {c['outcome']!r} "
                             f"(one of {', '.join(OUTCOMES[:5])})")
        comps[key] = c
    out = []
    for key, f in fins.items():
        rnd, gate, rid = key
        refined = bool(f["solved"]) and not f["passed_at_root"]
        status = REFINED if refined else (PASSED_AT_ROOT if f["passed_at_root"] else UNSOLVED)
        comp = comps.get(key)
        if refined and comp is None:
            raise ValueError(f"round {rnd}, gate {gate}, root {rid}: refined but not compared by the oracle "
                             "(refining.tree_search.oracle null, or a comparisons file missing)")
        if not refined and comp is not None:
            raise ValueError(f"round {rnd}, gate {gate}, root {rid}: compared by the oracle but {status}")
        outcome = comp["outcome"] if comp is not None else NO_CHANGE
        out.append({"round": rnd, "gate": gate, "k": int(f["k"]), "root_id": rid,
                    "question_id": str(f["question_id"]), "status": status, "outcome": outcome,
                    "prefer": int(outcome == WIN), "net": 1 if outcome == WIN else -1 if outcome == LOSS else 0,
                    "chain": f.get("chain")})
    out.sort(key=lambda r: (r["round"], r["k"], r["gate"], r["root_id"]))
    return out


# ------------------------------------------------------------------------------ gate against gate


def clustered_bootstrap_ci(values: Sequence[float], clusters: Sequence, confidence: float = 0.95,
                           n_boot: int = 2000, seed: int = 0) -> tuple[float | None, float | None, str]:
    """(low, high, method): a bootstrap interval of the mean of `values` that resamples CLUSTERS.

    The clusters (questions) are drawn with replacement and each keeps all its values (roots); the
    statistic is the mean over the values drawn (sum of the drawn clusters' sums over the sum of
    their sizes). scipy.stats.bootstrap (paired over the per-cluster sums and sizes) gives the BCa
    interval; where BCa cannot be computed (a degenerate bootstrap distribution, e.g. every value
    equal) the percentile interval. The guarantee is asymptotic: coverage tends to `confidence` as
    the number of clusters grows, for any dependence WITHIN a cluster, provided the clusters are
    independent (a root-level bootstrap treats roots sharing a question as independent and is too
    narrow when they agree). Fewer than 2 clusters: (None, None, "none")."""
    from scipy.stats import bootstrap

    sums: defaultdict[object, float] = defaultdict(float)
    sizes: Counter = Counter()
    for v, c in zip(values, clusters, strict=True):
        sums[c] += float(v)
        sizes[c] += 1
    if len(sums) < 2:
        return None, None, "none"
    s = np.array([sums[c] for c in sums])
    m = np.array([sizes[c] for c in sums], dtype=float)

    def ratio(s_, m_, axis=-1):
        return s_.sum(axis=axis) / m_.sum(axis=axis)

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's DegenerateDataWarning: the percentile interval follows
            res = bootstrap((s, m), ratio, paired=True, vectorized=True, n_resamples=n_boot, batch=500,
                            confidence_level=confidence, method=method, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (math.isnan(lo) or math.isnan(hi)):
            return lo, hi, method
    est = float(s.sum() / m.sum())
    return est, est, "degenerate"


def _difference_ci(diffs: np.ndarray, clusters: Sequence, confidence: float, n_boot: int, seed: int,
                   span: float) -> tuple[float | None, float | None, str]:
    """The interval of a mean paired difference: the clustered bootstrap, except where no root differs
    (every difference 0). The bootstrap then has nothing to resample and gives [0, 0], which would read
    as certainty; instead the exact bound: the share of roots that differ has the Clopper-Pearson upper
    bound u = 1 - (alpha/2)^(1/n) at 0 of n, and |mean difference| <= span * that share (span: the
    largest |difference| of one root), so [-span u, +span u] covers it with probability >= 1 - alpha/2
    (for independent roots: one per question)."""
    if len(diffs) and not np.any(diffs):
        u = span * (1 - ((1 - confidence) / 2) ** (1 / len(diffs)))
        return -u, u, "exact bound (no root differs)"
    return clustered_bootstrap_ci(diffs.tolist(), clusters, confidence, n_boot, seed)


def mcnemar_exact(b: int, c: int) -> float:
    """The exact McNemar p-value (two-sided): scipy.stats.binomtest(b, b + c, 0.5) on the discordant
    pairs (b: success under the first condition only, c: under the second only); 1.0 when b + c = 0.

    Guarantee: under H0 (P(b-type) = P(c-type) for every pair, pairs independent) the probability of
    p <= alpha is at most alpha for every n (exact, conservative: the binomial is discrete)."""
    from scipy.stats import binomtest

    return float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0


NO_ROOT = "no_root"  # a per-gate chain's question without a root: its actor's responses all passed (or none searched)


def _by_question(records: Mapping[str, Mapping], rnd: int, gate: str) -> dict[str, Mapping]:
    out: dict[str, Mapping] = {}
    for o in records.values():
        q = str(o["question_id"])
        if q in out:
            raise ValueError(f"round {rnd}, gate {gate}: question {q} has two roots; per-gate chains are compared per "
                             "question, one root each (refining.tree_search.root_choice: one_per_question)")
        out[q] = o
    return out


def gate_pairs(outcomes: Iterable[Mapping]) -> list[tuple[int, str, str, list[Mapping], list[Mapping]]]:
    """(round, gate_a, gate_b, a's records, b's records) for every pair of gates of a round, gate a the
    looser (smaller k), both lists in the same unit order.

    The unit is the root where both gates searched the same roots (round 1, a shared chain): the same
    roots, or a ValueError (the design is paired). In round r >= 2 of per-gate chains (records with a
    `chain`) each gate's roots are its own actor's responses: the unit is the question, over every
    question either chain rooted; a question the other chain did not root (all its responses passed,
    or it was not drawn into `roots`) counts there as `no_root`: nothing refined, the original stands
    (prefer 0, net 0), as a root that passed at the start does. `paired_by` of compare_gates says which."""
    by_key: defaultdict[tuple[int, str], dict[str, Mapping]] = defaultdict(dict)
    order: dict[tuple[int, str], int] = {}
    for o in outcomes:
        key = (int(o["round"]), str(o["gate"]))
        rid = str(o["root_id"])
        if rid in by_key[key]:
            raise ValueError(f"outcomes: two records for round {key[0]}, gate {key[1]}, root {rid}")
        by_key[key][rid] = o
        order[key] = int(o["k"])
    out = []
    for rnd in sorted({r for r, _ in by_key}):
        gates = sorted((g for r, g in by_key if r == rnd), key=lambda g: (order[(rnd, g)], g))
        for ga, gb in combinations(gates, 2):
            a, b = by_key[(rnd, ga)], by_key[(rnd, gb)]
            if any(o.get("chain") for o in (*a.values(), *b.values())):
                qa, qb = _by_question(a, rnd, ga), _by_question(b, rnd, gb)
                qids = sorted(set(qa) | set(qb))

                def one(recs, q, gate, k, rnd=rnd):
                    return recs.get(q) or {"round": rnd, "gate": gate, "k": k, "root_id": None, "question_id": q,
                                           "status": NO_ROOT, "outcome": NO_CHANGE, "prefer": 0, "net": 0,
                                           "chain": gate}
                out.append((rnd, ga, gb, [one(qa, q, ga, order[(rnd, ga)]) for q in qids],
                            [one(qb, q, gb, order[(rnd, gb)]) for q in qids]))
                continue
            if set(a) != set(b):
                only = sorted(set(a) ^ set(b))[:5]
                raise ValueError(f"round {rnd}: gates {ga} and {gb} have different roots (e.g. {only}): "
                                 "the comparison is paired, every gate needs every root")
            rids = sorted(a)
            out.append((rnd, ga, gb, [a[r] for r in rids], [b[r] for r in rids]))
    return out


def compare_gates(outcomes: Sequence[Mapping], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0,
                  holm: bool = True) -> list[dict]:
    """Every pair of gates of a round, compared on the same roots (a paired design).

    `outcomes`: `root_outcomes` records. For gates a < b (by k) of one round, over the roots both
    have (the same set: a gate missing a root the other has is a ValueError, the design is paired):

    * `prefer_a`, `prefer_b`: the share of roots whose final the oracle prefers; `diff` = prefer_b -
      prefer_a (negative: the stricter gate b lowers it), and `net_diff` the same for the net score
      (+1 win, -1 loss); each with a `confidence` bootstrap interval clustered by question
      (`clustered_bootstrap_ci`: questions resampled with their roots; asymptotic coverage for
      independent questions, whatever the dependence of roots within one question);
    * `discordant_b`: roots preferred under gate a only, `discordant_c`: under gate b only;
      `mcnemar_p`: the exact McNemar test (`mcnemar_exact`, two-sided), valid for independent
      roots: roots sharing a question make it anticonservative when they agree (select_roots
      one_per_question removes the issue; the clustered interval does not assume it);
    * `mcnemar_p_holm` (holm=True): Holm's step-down adjustment (statsmodels multipletests,
      method "holm") over every gate pair in `outcomes`, all rounds together (`holm_family` tests):
      the probability of any false rejection among them is at most alpha under any dependence;
    * `verdict`: the result in words at alpha = 1 - confidence; a non-significant result is stated as
      "no significant difference at alpha=...", never as equal gates. The intervals are per pair,
      not adjusted for the number of pairs.

    `discordance` = (b + c) / n_roots is the pilot's input of `plan_gates`."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1 - confidence
    rows = []
    for rnd, ga, gb, a, b in gate_pairs(outcomes):
        qs = [str(o["question_id"]) for o in a]
        pa = np.array([o["prefer"] for o in a], dtype=float)
        pb = np.array([o["prefer"] for o in b], dtype=float)
        na = np.array([o["net"] for o in a], dtype=float)
        nb = np.array([o["net"] for o in b], dtype=float)
        n = len(a)
        lo, hi, method = _difference_ci(pb - pa, qs, confidence, n_boot, seed, span=1)
        nlo, nhi, _ = _difference_ci(nb - na, qs, confidence, n_boot, seed, span=2)
        disc_b, disc_c = int(((pa == 1) & (pb == 0)).sum()), int(((pa == 0) & (pb == 1)).sum())
        paired_by = "question" if any(o.get("chain") for o in (*a, *b)) else "root"
        rows.append({"round": rnd, "gate_a": ga, "gate_b": gb, "paired_by": paired_by, "n_roots": n,
                     "n_questions": len(set(qs)),
                     "prefer_a": float(pa.mean()), "prefer_b": float(pb.mean()),
                     "diff": float((pb - pa).mean()), "diff_ci_low": lo, "diff_ci_high": hi,
                     "net_a": float(na.mean()), "net_b": float(nb.mean()),
                     "net_diff": float((nb - na).mean()), "net_diff_ci_low": nlo,
                     "net_diff_ci_high": nhi, "discordant_b": disc_b, "discordant_c": disc_c,
                     "discordance": (disc_b + disc_c) / n,
                     "mcnemar_p": mcnemar_exact(disc_b, disc_c), "mcnemar_p_holm": None, "holm_family": None,
                     "alpha": round(alpha, 10), "confidence": confidence, "ci_method": method,
                     "n_boot": n_boot, "seed": seed})
    if holm and rows:
        from statsmodels.stats.multitest import multipletests

        adjusted = multipletests([r["mcnemar_p"] for r in rows], alpha=alpha, method="holm")[1]
        for r, p in zip(rows, adjusted):
            r["mcnemar_p_holm"], r["holm_family"] = float(p), len(rows)
    for r in rows:
        r["verdict"] = verdict(r)
    return rows


def verdict(row: Mapping) -> str:
    """A `compare_gates` row in words: significant or not at its alpha (Holm-adjusted p where given),
    with the direction and the interval; a null result is a null result, not equality."""
    ga, gb, alpha = row["gate_a"], row["gate_b"], row["alpha"]
    adjusted = row.get("mcnemar_p_holm") is not None
    p = row["mcnemar_p_holm"] if adjusted else row["mcnemar_p"]
    p_txt = f"{'Holm-adjusted ' if adjusted else ''}exact McNemar p = {p:.3g}"
    unit = "questions" if row.get("paired_by") == "question" else "roots"  # per-gate chains: per question
    if not row["n_roots"]:
        return f"no roots: nothing to compare between {ga} and {gb}"
    ci = ""
    if row["diff_ci_low"] is not None:
        ci = (f"; {row['confidence']:.0%} question-clustered interval of {gb} - {ga}: "
              f"{row['diff_ci_low']:+.3f} to {row['diff_ci_high']:+.3f}")
    disc = row["discordant_b"] + row["discordant_c"]
    if p < alpha:
        way = "lowers" if row["diff"] < 0 else "raises"
        caution = ""
        if row["diff_ci_low"] is not None and row["diff_ci_low"] <= 0 <= row["diff_ci_high"]:
            caution = (" (but the question-clustered interval includes 0: McNemar counts the roots of one "
                       "question as independent, the interval does not)")
        return (f"{gb} {way} how often the oracle prefers the final over the original, against {ga}: "
                f"{row['diff']:+.3f} ({p_txt} < alpha = {alpha:g}; {row['discordant_b']} {unit} preferred under "
                f"{ga} only, {row['discordant_c']} under {gb} only){ci}{caution}")
    return (f"no significant difference between {ga} and {gb} at alpha={alpha:g} ({p_txt}, {disc} discordant "
            f"{unit} of {row['n_roots']}; observed {gb} - {ga} = {row['diff']:+.3f}){ci}. A null result: the data "
            "do not rule out the differences in the interval, and are no evidence that the gates are equal")


# ------------------------------------------------------------------------------ which roots


def select_roots(roots: Sequence[Mapping], mode: str, seed: int) -> list[Mapping]:
    """The roots searched: `all` (every rejected response) or `one_per_question` (SPaR: one failing
    response per prompt, chosen uniformly at random).

    `roots`: the rejected responses (response_id, or root_id, and question_id). one_per_question picks,
    for each question, one of its responses (sorted by id) with random.Random seeded by
    stable_seed(seed, "one-root", question_id): the same choice for the same seed, whatever the input
    order. A question with no failing response has no root and is simply absent (the study covers the
    questions the policy fails at least once). The kept roots are returned in input order. A mode
    other than these two is a ValueError naming refining.tree_search.root_choice."""
    if mode not in ROOT_MODES:
        raise ValueError(f"{ROOTS_KEY}: unknown mode {mode!r} (one of {', '.join(ROOT_MODES)})")
    if mode == "all":
        return list(roots)

    def rid(r: Mapping) -> str:
        if "response_id" in r:
            return str(r["response_id"])
        if "root_id" in r:
            return str(r["root_id"])
        raise ValueError(f"{ROOTS_KEY}: a root without response_id or root_id: {dict(r)}")

    ids: defaultdict[str, list[str]] = defaultdict(list)
    for r in roots:
        ids[str(r["question_id"])].append(rid(r))
    keep = set()
    for q, members in ids.items():
        if len(set(members)) != len(members):
            raise ValueError(f"{ROOTS_KEY}: question {q} lists a root twice")
        keep.add((q, random.Random(stable_seed(seed, "one-root", q)).choice(sorted(members))))
    return [r for r in roots if (str(r["question_id"]), rid(r)) in keep]


# ------------------------------------------------------------------------------ planning


def _unit(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and 0 < value < 1):
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return float(value)


def _check(effect: float, discordance: float, alpha: float) -> None:
    _unit("effect", effect)
    _unit("alpha", alpha)
    if not (isinstance(discordance, int | float) and effect <= discordance <= 1):
        raise ValueError(f"discordance must be in [effect, 1] = [{effect:g}, 1] (the discordant share p10 + p01 "
                         f"is at least |p10 - p01|), got {discordance}")


def mcnemar_size(effect: float, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Roots (pairs) needed by the two-sided McNemar test at level alpha to detect p10 - p01 = effect
    with probability `power`, where psi = p10 + p01 = discordance (Connor 1987, the normal
    approximation):

        n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - effect^2))^2 / effect^2

    computed by statsmodels' normal_sample_size_one_tail (std under H0 sqrt(psi), under the
    alternative sqrt(psi - effect^2)). Not rounded. An approximation: the exact (conditional) test
    is conservative, its power at this n a little below `power` (see the tests' simulation)."""
    from statsmodels.stats.power import normal_sample_size_one_tail

    _check(effect, discordance, alpha)
    _unit("power", power)
    return float(normal_sample_size_one_tail(effect, power, alpha / 2, std_null=math.sqrt(discordance),
                                             std_alternative=math.sqrt(discordance - effect ** 2)))


def achieved_power(n: int, effect: float, discordance: float, alpha: float = 0.05) -> float:
    """The power of the two-sided McNemar test at level alpha with n roots, for p10 - p01 = effect and
    p10 + p01 = discordance: Connor's normal approximation (statsmodels normal_power_het with the
    std's of `mcnemar_size`; both tails counted). The inverse of `mcnemar_size`: the same
    approximation, so the same caveat for the exact test."""
    from statsmodels.stats.power import normal_power_het

    if not (isinstance(n, int | np.integer) and n >= 1):
        raise ValueError(f"n must be an integer >= 1, got {n}")
    _check(effect, discordance, alpha)
    return float(normal_power_het(effect, n, alpha, std_null=math.sqrt(discordance),
                                  std_alternative=math.sqrt(discordance - effect ** 2)))


def unpaired_size(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Per group: the size of two INDEPENDENT samples (gate a and gate b on separate roots) for the
    two-sided z test of two proportions to detect p_a against p_b (normal approximation, pooled
    variance under H0, unpooled under the alternative, no continuity correction):

        n = (z_{1-alpha/2} sqrt(2 pbar qbar) + z_{power} sqrt(p_a q_a + p_b q_b))^2 / (p_a - p_b)^2

    computed by statsmodels.stats.proportion.samplesize_proportions_2indep_onetail. Not rounded
    (0.70 against 0.60 at alpha 0.05, power 0.8: 355.9, so 356 per group)."""
    from statsmodels.stats.proportion import samplesize_proportions_2indep_onetail

    for name, p in (("p_a", p_a), ("p_b", p_b)):
        if not (isinstance(p, int | float) and 0 <= p <= 1):
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if p_a == p_b:
        raise ValueError(f"p_a and p_b must differ, both are {p_a}")
    _unit("alpha", alpha)
    _unit("power", power)
    return float(samplesize_proportions_2indep_onetail(p_a - p_b, p_b, power, alpha=alpha,
                                                       alternative="two-sided"))


def pilot_counts(pilot: Sequence[Mapping], gates: Sequence[str] | None = None) -> dict:
    """What `plan_gates` reads of a pilot run, for one gate pair: {gate_a, gate_b, rounds, n_roots,
    discordant_b, discordant_c, prefer_a, prefer_b}.

    `pilot`: `root_outcomes` records (round, gate, k, root_id, question_id, prefer) or `compare_gates`
    rows (gate_a, gate_b, n_roots, discordant_b, discordant_c, prefer_a, prefer_b; read back from
    JSON or CSV, numbers may be text). `gates`: the pair (a, b), in either order: b's counts are
    those of the second name; None when the pilot has one pair only. The rounds of that pair are
    pooled (sums over their roots)."""
    records = list(pilot)
    if not records:
        raise ValueError("pilot: no records")
    if all("prefer" in r and "gate" in r for r in records):
        rows: list[Mapping] = []
        for rnd, ga, gb, recs_a, recs_b in gate_pairs(records):
            xa, xb = [int(o["prefer"]) for o in recs_a], [int(o["prefer"]) for o in recs_b]
            rows.append({"round": rnd, "gate_a": ga, "gate_b": gb, "n_roots": len(xa),
                         "discordant_b": sum(x and not y for x, y in zip(xa, xb)),
                         "discordant_c": sum(y and not x for x, y in zip(xa, xb)),
                         "prefer_a": sum(xa) / len(xa), "prefer_b": sum(xb) / len(xb)})
    elif all({"gate_a", "gate_b", "n_roots", "discordant_b", "discordant_c"} <= set(r) for r in records):
        rows = records
    else:
        raise ValueError("pilot: neither root_outcomes records (round, gate, k, root_id, question_id, prefer) nor "
                         "compare_gates rows (gate_a, gate_b, n_roots, discordant_b, discordant_c, prefer_a, prefer_b)")
    pairs = list(dict.fromkeys((str(r["gate_a"]), str(r["gate_b"])) for r in rows))
    if gates is None:
        if len(pairs) != 1:
            raise ValueError(f"gates: the pilot has {len(pairs)} gate pairs ({pairs}): name one")
        want = pairs[0]
    else:
        if len(gates) != 2:
            raise ValueError(f"gates: two gate names, got {list(gates)}")
        want = (str(gates[0]), str(gates[1]))
        if want not in pairs and want[::-1] not in pairs:
            raise ValueError(f"gates: the pilot has no pair {want[0]}, {want[1]} (it has {pairs})")
    flip = want not in pairs
    use = [r for r in rows if (str(r["gate_a"]), str(r["gate_b"])) == (want[::-1] if flip else want)]

    def total(key: str) -> float:
        return sum(float(r[key]) for r in use)

    def rate(key: str) -> float | None:
        if any(r.get(key) in (None, "") for r in use):
            return None
        return sum(float(r[key]) * float(r["n_roots"]) for r in use) / n if n else None

    n = int(total("n_roots"))
    b, c = int(total("discordant_b")), int(total("discordant_c"))
    pa, pb = rate("prefer_a"), rate("prefer_b")
    if flip:
        b, c, pa, pb = c, b, pb, pa
    return {"gate_a": want[0], "gate_b": want[1], "rounds": len(use), "n_roots": n, "discordant_b": b,
            "discordant_c": c, "prefer_a": pa, "prefer_b": pb}


def plan_gates(effect: float, discordance: float | None = None, pilot: Sequence[Mapping] | None = None,
               alpha: float = 0.05, power: float = 0.8, *, gates: Sequence[str] | None = None,
               baseline: float | None = None) -> dict:
    """How many roots a gate comparison needs to detect a change `effect` in `prefer` (two-sided, level
    alpha, probability `power`), paired and unpaired.

    * paired (both gates on the same roots, as the tree search runs them; McNemar): `mcnemar_size`
      with effect = |p10 - p01| and discordance psi = p10 + p01 (p10: the share of roots preferred
      under gate a only, p01: under gate b only), rounded up;
    * unpaired (each gate on its own roots; two independent proportions): `unpaired_size` per gate,
      rounded up, for p_a = baseline (the prefer rate under the looser gate) against p_b = baseline -
      effect (the claim's direction; baseline + effect when baseline < effect). Without a baseline
      (given or from the pilot) the worst case p_a, p_b = 0.5 +- effect/2, the largest variance.

    psi is `discordance` or, from a `pilot` (see `pilot_counts`; `gates` picks the pair), the
    observed (b + c) / n; the pilot also gives the baseline (its prefer_a) unless `baseline` is given,
    and `pilot.achieved_power`: the power its own n had for this effect (`achieved_power`). Bad input
    is a ValueError naming the argument: effect outside (0, 1), alpha or power outside (0, 1),
    discordance below effect or above 1, both or neither of discordance and pilot."""
    _unit("effect", effect)
    _unit("alpha", alpha)
    _unit("power", power)
    if (discordance is None) == (pilot is None):
        raise ValueError("discordance: give the discordance rate or a pilot, exactly one of them")
    counts = None
    source = "given"
    if pilot is not None:
        counts = pilot_counts(pilot, gates)
        if not counts["n_roots"]:
            raise ValueError("pilot: no roots for the gate pair")
        discordance = (counts["discordant_b"] + counts["discordant_c"]) / counts["n_roots"]
        source = f"pilot ({counts['n_roots']} roots)"
        if discordance < effect:
            raise ValueError(f"pilot: its discordance rate {discordance:.4g} is below effect {effect:g} (the "
                             f"discordant share bounds the difference): plan with a discordance of your own")
    assert discordance is not None
    n_paired = mcnemar_size(effect, discordance, alpha, power)
    base_from = "given"
    if baseline is None and counts is not None and counts["prefer_a"] is not None:
        baseline, base_from = counts["prefer_a"], "pilot"
    if baseline is None:
        p_a, p_b, base_from = 0.5 + effect / 2, 0.5 - effect / 2, "worst case (0.5 +- effect/2)"
    else:
        if not (isinstance(baseline, int | float) and 0 <= baseline <= 1):
            raise ValueError(f"baseline must be in [0, 1], got {baseline}")
        p_a = float(baseline)
        p_b = p_a - effect if p_a >= effect else p_a + effect
        if p_b > 1:
            raise ValueError(f"baseline: neither {p_a:g} - effect nor {p_a:g} + effect is a proportion")
    n_unpaired = unpaired_size(p_a, p_b, alpha, power)
    paired_n, per_gate = math.ceil(n_paired), math.ceil(n_unpaired)
    out = {"effect": effect, "alpha": alpha, "power": power, "discordance": discordance,
           "discordance_from": source,
           "paired": {"n_roots": paired_n, "n_exact": n_paired,
                      "design": "both gates on the same roots; exact McNemar (sized by Connor 1987)"},
           "unpaired": {"n_per_gate": per_gate, "n_total": 2 * per_gate, "n_exact": n_unpaired, "p_a": p_a,
                        "p_b": p_b, "baseline_from": base_from,
                        "design": "each gate on its own roots; two-sample z test of proportions"},
           "unpaired_over_paired": round(2 * per_gate / paired_n, 4), "pilot": None}
    if counts is not None:
        counts["discordance"] = discordance
        counts["observed_effect"] = (counts["discordant_b"] - counts["discordant_c"]) / counts["n_roots"]
        counts["achieved_power"] = achieved_power(counts["n_roots"], effect, discordance, alpha)
        out["pilot"] = counts
    return out
