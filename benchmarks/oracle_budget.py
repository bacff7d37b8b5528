"""Oracle calls needed to certify N* on TP(n) = 0.965 - 0.03 n (n = 1..15), T = 0.8, delta = 0.05.

The issue's figure: the true N* is 5 (TP(5) = 0.815, TP(6) = 0.785). Every strategy of
``judgeflow.tp.strategies`` runs on Bernoulli labels (``judgeflow.tp.simulate``), side by side:
median and 90th-percentile oracle calls, the distribution of the certified N*, the error rate
(runs certifying beyond the true N*) and the wall time.

    .venv/bin/python benchmarks/oracle_budget.py [--runs 400] [--seed 0] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from judgeflow.tp.simulate import simulate, true_nstar  # noqa: E402
from judgeflow.tp.strategies import STRATEGIES  # noqa: E402

CURVE = [round(0.965 - 0.03 * n, 10) for n in range(1, 16)]
THRESHOLD, DELTA = 0.8, 0.05
TARGET_MEDIAN = 6500


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=10_000_000, help="calls at most per run")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--json", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("argument --runs: must be >= 1")

    truth = true_nstar(CURVE, THRESHOLD)
    results = {}
    for name in args.strategies.split(","):
        t0 = time.perf_counter()
        r = simulate(CURVE, THRESHOLD, DELTA, name, runs=args.runs, seed=args.seed, budget=args.budget,
                     keep_runs=False)
        r["wall_seconds"] = round(time.perf_counter() - t0, 2)
        results[name] = r

    print(f"TP(n) = 0.965 - 0.03 n, n = 1..15; T = {THRESHOLD}, delta = {DELTA}; true N* = {truth}; "
          f"{args.runs} runs, seed {args.seed}")
    head = f"{'strategy':<16}{'median calls':>14}{'p90 calls':>12}{'mean calls':>12}{'error rate':>12}" \
           f"{'N*=true':>9}  {'N* distribution':<30}{'wall s':>8}"
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        dist = " ".join(f"{k}:{v}" for k, v in r["nstar_counts"].items())
        print(f"{name:<16}{r['median_calls']:>14,.0f}{r['p90_calls']:>12,.0f}{r['mean_calls']:>12,.0f}"
              f"{r['error_rate']:>12.4f}{r['exact_rate']:>9.3f}  {dist:<30}{r['wall_seconds']:>8.2f}")
    best = min(results.values(), key=lambda r: r["median_calls"])
    ok = best["median_calls"] <= TARGET_MEDIAN and best["error_rate"] <= DELTA
    print(f"best: {best['strategy']} median {best['median_calls']:,.0f} calls (target <= {TARGET_MEDIAN:,}), "
          f"error rate {best['error_rate']:.4f} (target <= {DELTA}): {'met' if ok else 'NOT met'}")
    doc = {"curve": CURVE, "threshold": THRESHOLD, "delta": DELTA, "true_nstar": truth, "runs": args.runs,
           "seed": args.seed, "target_median_calls": TARGET_MEDIAN, "target_met": ok, "results": results}
    print(json.dumps(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
