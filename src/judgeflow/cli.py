"""`judgeflow`: planning tools for oracle-verified TP curves (before paying for oracle calls).

    judgeflow tp-model --a 2 --b 1 --p0 0.2 --p1 0.9 --n-max 10 [--json]
    judgeflow oracle-budget --curve 0.935,0.905,0.875 --threshold 0.8 --delta 0.05 \
        --strategy fixed_sequence --runs 200 --seed 0 [--budget B] [--option key=value ...]

Bad input exits with status 2 and a message naming the argument.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

__all__ = ["build_parser", "main"]


def _checked(name, cast, what, ok):
    """An argparse type: `cast` the text, then require ok(value); errors say `name` must be `what`."""
    noun = "an integer" if cast is int else "a number"

    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {noun} {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{name} must be {noun} {what}, got {text}")
        return v
    return parse


def _open_unit(name):
    return _checked(name, float, "in (0, 1)", lambda v: 0 < v < 1)


def _closed_unit(name):
    return _checked(name, float, "in [0, 1]", lambda v: 0 <= v <= 1)


def _positive(name):
    return _checked(name, float, "> 0 (finite)", lambda v: v > 0 and math.isfinite(v))


def _int_at_least(name, lo):
    return _checked(name, int, f">= {lo}", lambda v: v >= lo)


def _curve(text):
    from .tp.simulate import check_curve

    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(p == "" for p in parts):
        raise argparse.ArgumentTypeError(f"--curve must be comma-separated numbers in [0, 1], got {text!r}")
    try:
        return check_curve(parts)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _option(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option must be KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    from .tp.strategies import STRATEGIES

    p = argparse.ArgumentParser(prog="judgeflow", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("tp-model", help="model TP(n) = P(X=1 | first accept at n) for n = 1..N",
                       description="TP(n) under the Beta-judge model: p ~ Beta(a, b), judge p1 = P(Y=1|X=1), "
                                   "p0 = P(Y=1|X=0).")
    m.add_argument("--a", type=_positive("--a"), required=True, help="Beta prior a > 0")
    m.add_argument("--b", type=_positive("--b"), required=True, help="Beta prior b > 0")
    m.add_argument("--p0", type=_closed_unit("--p0"), required=True, help="P(judge YES | X=0)")
    m.add_argument("--p1", type=_closed_unit("--p1"), required=True, help="P(judge YES | X=1)")
    m.add_argument("--n-max", type=_int_at_least("--n-max", 1), required=True, help="largest n")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")

    o = sub.add_parser("oracle-budget", help="simulate oracle labelling on a known TP curve",
                       description="Simulate a labelling strategy on a true TP curve (Bernoulli labels); prints "
                                   "JSON: N* per run, median / p90 calls, error rate (N* beyond the true N*).")
    o.add_argument("--curve", type=_curve, required=True, help="TP(1),TP(2),... comma-separated, each in [0, 1]")
    o.add_argument("--threshold", type=_open_unit("--threshold"), required=True, help="T in (0, 1)")
    o.add_argument("--delta", type=_open_unit("--delta"), required=True, help="delta in (0, 1)")
    o.add_argument("--strategy", choices=[*STRATEGIES, "all"], default="fixed_sequence")
    o.add_argument("--runs", type=_int_at_least("--runs", 1), default=100)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--budget", type=_int_at_least("--budget", 0), default=10_000_000,
                   help="oracle calls at most per run (default: effectively unlimited)")
    o.add_argument("--batch-size", type=_int_at_least("--batch-size", 1), default=None,
                   help="labels per oracle round (default: as many as useful; same results as 1)")
    o.add_argument("--abstain-rate", type=_closed_unit("--abstain-rate"), default=0.0,
                   help="probability that the simulated oracle abstains")
    o.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="strategy option (JSON value), repeatable, e.g. --option futility_level=0.5")
    o.add_argument("--no-runs", action="store_true", help="leave out the per-run N* and calls lists")
    return p


def _tp_model(args) -> int:
    from .tp.model import curve_table

    try:
        rows = curve_table(args.n_max, a=args.a, b=args.b, p0=args.p0, p1=args.p1)
    except ValueError as e:
        print(f"judgeflow tp-model: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "p0": args.p0, "p1": args.p1, "rows": rows}, indent=1))
        return 0
    print(f"Beta-judge model: p ~ Beta({args.a:g}, {args.b:g}), p1 = {args.p1:g}, p0 = {args.p0:g}")
    print(f"{'n':>4} {'TP(n)':>9} {'P(N=n)':>9} {'P(N<=n)':>9}")
    for r in rows:
        tp = "nan" if math.isnan(r["tp"]) else f"{r['tp']:.4f}"
        print(f"{r['n']:>4} {tp:>9} {r['p_first_accept']:>9.4f} {r['p_accept_within']:>9.4f}")
    return 0


def _oracle_budget(args, parser) -> int:
    from .tp.simulate import simulate, true_nstar
    from .tp.strategies import STRATEGIES, make_strategy

    options = dict(args.option)
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    names = list(STRATEGIES) if args.strategy == "all" else [args.strategy]
    if args.strategy == "all":
        known = {"batch_size"}.union(*(STRATEGIES[n].defaults for n in names))
        unknown = sorted(set(options) - known)
        if unknown:
            parser.error(f"argument --option: no strategy has the option(s) {', '.join(unknown)}")
    out = {}
    for name in names:
        # options meant for one strategy are not passed to the others under --strategy all
        own = {k: v for k, v in options.items()
               if k == "batch_size" or k in STRATEGIES[name].defaults or args.strategy != "all"}
        try:  # options are checked by building the strategy once; every other input is checked already
            make_strategy(name, n_max=len(args.curve), threshold=args.threshold, delta=args.delta,
                          budget=args.budget, **own)
        except ValueError as e:
            parser.error(f"argument {'--batch-size' if 'batch_size' in str(e) else '--option'}: {e}")
        out[name] = simulate(args.curve, args.threshold, args.delta, name, runs=args.runs, seed=args.seed,
                             budget=args.budget, abstain_rate=args.abstain_rate, keep_runs=not args.no_runs, **own)
    if args.strategy == "all":
        result = {"curve": args.curve, "threshold": args.threshold, "delta": args.delta,
                  "true_nstar": true_nstar(args.curve, args.threshold), "strategies": out}
    else:
        result = {"curve": args.curve, **out[args.strategy]}
    print(json.dumps(result, indent=1))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "tp-model":
        return _tp_model(args)
    sub = parser._subparsers._group_actions[0].choices["oracle-budget"]
    return _oracle_budget(args, sub)


if __name__ == "__main__":
    sys.exit(main())
