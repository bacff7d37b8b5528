"""Oracle calls needed to certify N* on TP(n) = 0.965 - 0.03 n (n = 1..15), T = 0.8, delta = 0.05.

Three tables (issue 13's figures): every strategy without a proxy; prediction_powered with a
synthetic proxy (AUC 0.9, a useless one at AUC 0.5, a miscalibrated one shifted by 1.5) side by
side with fixed_sequence; and the boundary curve TP(n) = 0.95 - 0.03 n (TP(5) = T exactly, so
certifying N* >= 5 is an error) with the default settings.

The issue's figure: the true N* is 5 (TP(5) = 0.815, TP(6) = 0.785). Every strategy of
``judgeflow.oracle.tp.strategies`` runs on Bernoulli labels (``judgeflow.oracle.tp.simulate``), side by side:
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

from judgeflow.oracle.tp.simulate import simulate, true_nstar  # noqa: E402
from judgeflow.oracle.tp.strategies import STRATEGIES  # noqa: E402

CURVE = [round(0.965 - 0.03 * n, 10) for n in range(1, 16)]
BOUNDARY = [round(0.95 - 0.03 * n, 10) for n in range(1, 16)]
PROXIES = [(0.9, 0.0), (0.5, 0.0), (0.9, 1.5)]
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
    base = results.get("fixed_sequence") or simulate(CURVE, THRESHOLD, DELTA, "fixed_sequence", runs=args.runs,
                                                     seed=args.seed, budget=args.budget, keep_runs=False)
    print(f"\nprediction_powered with a synthetic proxy (Phi(mu (X - 1/2) + shift + N(0, 1))), same curve")
    print(f"{'proxy':<24}{'median calls':>14}{'p90 calls':>12}{'vs none':>9}{'error rate':>12}{'N*=true':>9}"
          f"{'wall s':>8}  verdict")
    proxied, verdicts = {}, []
    for auc, shift in PROXIES:
        t0 = time.perf_counter()
        r = simulate(CURVE, THRESHOLD, DELTA, "prediction_powered", runs=args.runs, seed=args.seed,
                     budget=args.budget, proxy_auc=auc, proxy_shift=shift, keep_runs=False)
        ratio = r["median_calls"] / base["median_calls"]
        if shift:
            ok_ = r["error_rate"] <= DELTA
            want = f"error <= {DELTA}"
        elif auc >= 0.9:
            ok_ = r["median_calls"] <= 3500 and r["error_rate"] <= DELTA
            want = "median <= 3,500, error <= delta"
        else:
            ok_ = ratio <= 1.1 and r["error_rate"] <= DELTA
            want = "<= 1.1x no proxy, error <= delta"
        verdicts.append(ok_)
        key = f"AUC {auc:g}, shift {shift:g}"
        proxied[key] = {**r, "ratio_to_no_proxy": ratio, "target": want, "target_met": ok_}
        print(f"{key:<24}{r['median_calls']:>14,.0f}{r['p90_calls']:>12,.0f}{ratio:>9.2f}{r['error_rate']:>12.4f}"
              f"{r['exact_rate']:>9.3f}{time.perf_counter() - t0:>8.1f}  {want}: {'met' if ok_ else 'NOT met'}")
    print(f"{'none (fixed_sequence)':<24}{base['median_calls']:>14,.0f}{base['p90_calls']:>12,.0f}{1.0:>9.2f}"
          f"{base['error_rate']:>12.4f}{base['exact_rate']:>9.3f}")

    print(f"\nboundary curve TP(n) = 0.95 - 0.03 n: TP(5) = T, true N* = {true_nstar(BOUNDARY, THRESHOLD)} "
          "(certifying N* >= 5 is an error); default settings")
    boundary = {}
    for name, kw in (("fixed_sequence", {}), ("prediction_powered (AUC 0.9)", {"proxy_auc": 0.9})):
        r = simulate(BOUNDARY, THRESHOLD, DELTA, name.split()[0], runs=args.runs, seed=args.seed, budget=args.budget,
                     keep_runs=False, **kw)
        ok_ = r["p90_calls"] <= 50_000 and r["error_rate"] <= DELTA
        verdicts.append(ok_)
        boundary[name] = {**r, "target_met": ok_}
        print(f"{name:<30} median {r['median_calls']:>9,.0f}  p90 {r['p90_calls']:>9,.0f}  max {r['max_calls']:>9,}"
              f"  error {r['error_rate']:.4f}  undecided {r['undecided_rate']:.2f}  budget spent "
              f"{r['budget_exhausted_rate']:.2f}  (p90 <= 50,000, error <= delta: {'met' if ok_ else 'NOT met'})")
    doc = {"curve": CURVE, "threshold": THRESHOLD, "delta": DELTA, "true_nstar": truth, "runs": args.runs,
           "seed": args.seed, "target_median_calls": TARGET_MEDIAN, "target_met": ok and all(verdicts),
           "results": results, "proxy": proxied, "boundary": boundary}
    print(json.dumps(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
