"""The indifference margin eps (``min_effect``) of fixed_sequence, on curves other than the issue's.

For each curve and eps in {off, 0.005, 0.01, 0.02}: median, 90th percentile and largest oracle
calls, the share of runs that spent the whole budget, the share given up as undecided, the error
rate (certifying an n with TP(n) <= T) and the share certifying the true N*. eps trades power on
an n with TP(n) in (T, T + eps) for a cost bounded by about 2 T(1-T) log(1/delta) / eps^2 labels.

    .venv/bin/python benchmarks/oracle_margin.py [--runs 100] [--seed 0] [--budget 1000000]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from judgeflow.oracle.tp.model import tp_curve  # noqa: E402
from judgeflow.oracle.tp.simulate import simulate, true_nstar  # noqa: E402

CURVES = {
    "S1: 0.965 - 0.03 n, T 0.8": ([round(0.965 - 0.03 * n, 10) for n in range(1, 16)], 0.8),
    "boundary: 0.95 - 0.03 n, T 0.8 (TP(5) = T)": ([round(0.95 - 0.03 * n, 10) for n in range(1, 16)], 0.8),
    "T 0.9: 0.975 - 0.018 n (TP(4) = 0.903)": ([round(0.975 - 0.018 * n, 10) for n in range(1, 16)], 0.9),
    "Beta-judge a=2 b=0.3 p0=0.2 p1=0.9, T 0.8": (tp_curve(10, a=2, b=0.3, p0=0.2, p1=0.9), 0.8),
    "flat 0.75 (n = 1..5), T 0.7": ([0.75] * 5, 0.7),
}
EPS = [None, 0.005, 0.01, 0.02]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=1_000_000)
    ap.add_argument("--delta", type=float, default=0.05)
    args = ap.parse_args(argv)
    doc = {}
    for name, (curve, t) in CURVES.items():
        print(f"\n{name}: true N* = {true_nstar(curve, t)}, delta = {args.delta}, {args.runs} runs")
        print(f"{'eps':>6}{'median':>10}{'p90':>10}{'max':>10}{'budget':>8}{'undec.':>8}{'error':>7}{'exact':>7}")
        doc[name] = {}
        for eps in EPS:
            r = simulate(curve, t, args.delta, "fixed_sequence", runs=args.runs, seed=args.seed, budget=args.budget,
                         keep_runs=False, min_effect=eps)
            doc[name][str(eps)] = r
            print(f"{'off' if eps is None else eps:>6}{r['median_calls']:>10,.0f}{r['p90_calls']:>10,.0f}"
                  f"{r['max_calls']:>10,}{r['budget_exhausted_rate']:>8.2f}{r['undecided_rate']:>8.2f}"
                  f"{r['error_rate']:>7.3f}{r['exact_rate']:>7.2f}")
    print(json.dumps({k: {e: {m: v[m] for m in ("median_calls", "p90_calls", "max_calls", "error_rate",
                                                  "exact_rate", "undecided_rate", "budget_exhausted_rate")}
                              for e, v in d.items()} for k, d in doc.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
