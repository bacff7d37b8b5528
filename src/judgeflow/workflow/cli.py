"""`judgeflow`: planning tools for oracle-verified TP curves (before paying for oracle calls).

    judgeflow tp-model --a 2 --b 1 --p0 0.2 --p1 0.9 --n-max 10 [--json]
    judgeflow oracle-budget --curve 0.935,0.905,0.875 --threshold 0.8 --delta 0.05 \
        --strategy fixed_sequence --runs 200 --seed 0 [--budget B] [--option key=value ...] \
        [--proxy-auc 0.9 [--proxy-shift 0]] [--questions Q (--accept-probs ... | --a/--b/--p0/--p1)]
    judgeflow plan --a 2 --b 0.3 --p0 0.2 --p1 0.9 --threshold 0.8 --delta 0.05 [--target 5] \
        [--proxy-auc 0.9] [--fit results/<run>/oracle/fit.json]
    judgeflow plan-gates --effect 0.1 (--discordance 0.3 | --pilot results/<run>/tree_search [--gates 3of5 5of5]) \
        [--baseline 0.7] [--alpha 0.05] [--power 0.8] [--json]
    judgeflow estimate [--configfile config/config.yaml ...] [--config key=value ...] [--pilot logs/<run>/costs.jsonl] \
        [--json]

Bad input exits with status 2 and a message naming the argument.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
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
    from judgeflow.oracle.tp.simulate import check_curve

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
    from judgeflow.oracle.tp.strategies import STRATEGIES

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
    o.add_argument("--curve", type=_curve, default=None,
                   help="TP(1),TP(2),... comma-separated, each in [0, 1] (or give the model --a --b --p0 --p1)")
    o.add_argument("--n-max", type=_int_at_least("--n-max", 1), default=None,
                   help="with the model and no --curve: n = 1..n_max (default 15)")
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
    o.add_argument("--proxy-auc", type=_checked("--proxy-auc", float, "in [0.5, 1)", lambda v: 0.5 <= v < 1),
                   default=None, help="a synthetic proxy score per draw with this AUC: also run the "
                                      "prediction_powered strategy with it, side by side with --strategy")
    o.add_argument("--proxy-shift", type=_checked("--proxy-shift", float, "(finite)", math.isfinite), default=0.0,
                   help="the synthetic proxy's calibration shift on the probit scale (default 0)")
    _pool_args(o)
    _model_args(o, required=False)

    q = sub.add_parser("plan", help="how many questions and oracle calls to certify a target N*",
                       description="From a model curve (the Beta-judge a, b, p0, p1, or a fitted fit.json), "
                                   "simulate the labelling on finite pools of accepted draws and find the fewest "
                                   "questions Q with which N* >= target is certified in a share --power of runs; "
                                   "the expected oracle calls there, with and without a proxy.")
    _model_args(q, required=False)
    q.add_argument("--fit", default=None, help="fit.json of a run (results/<run>/oracle/fit.json): a, b, p0, p1")
    q.add_argument("--threshold", type=_open_unit("--threshold"), required=True, help="T in (0, 1)")
    q.add_argument("--delta", type=_open_unit("--delta"), required=True, help="delta in (0, 1)")
    q.add_argument("--n-max", type=_int_at_least("--n-max", 1), default=15, help="draws per question at most")
    q.add_argument("--target", type=_int_at_least("--target", 1), default=None,
                   help="the N* to certify (default: the model's true N*)")
    q.add_argument("--proxy-auc", type=_checked("--proxy-auc", float, "in [0.5, 1)", lambda v: 0.5 <= v < 1),
                   action="append", default=[], help="also plan with a proxy of this AUC (repeatable)")
    q.add_argument("--power", type=_open_unit("--power"), default=0.8,
                   help="share of runs that must certify N* >= target (default 0.8)")
    q.add_argument("--runs", type=_int_at_least("--runs", 1), default=40)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--max-questions", type=_int_at_least("--max-questions", 1), default=10_000_000)

    g = sub.add_parser("plan-gates", help="roots needed to see two exit gates differ (paired and unpaired)",
                       description="Roots needed to detect a change --effect in the share of roots whose final the "
                                   "oracle prefers over the original, gate against gate: paired (the same roots "
                                   "under both gates, exact McNemar) and unpaired (separate roots per gate).")
    g.add_argument("--effect", type=_open_unit("--effect"), required=True,
                   help="the difference to detect, p10 - p01 (a share of roots), in (0, 1)")
    g.add_argument("--discordance", type=_checked("--discordance", float, "in (0, 1]", lambda v: 0 < v <= 1),
                   default=None, help="share of roots preferred under exactly one of the two gates (p10 + p01)")
    g.add_argument("--pilot", default=None,
                   help="a pilot run instead of --discordance: its results/<run>/tree_search folder (the gates' "
                        "final.jsonl and comparisons.jsonl), or a file of root outcomes or gate comparisons "
                        "(.jsonl, .json or .csv)")
    g.add_argument("--gates", nargs=2, metavar=("GATE_A", "GATE_B"), default=None,
                   help="the pilot's gate pair, e.g. 3of5 5of5 (needed when it has several)")
    g.add_argument("--baseline", type=_closed_unit("--baseline"), default=None,
                   help="the prefer rate under the looser gate, for the unpaired size (default: the pilot's, "
                        "else the worst case 0.5 + effect/2)")
    g.add_argument("--alpha", type=_open_unit("--alpha"), default=0.05, help="two-sided level (default 0.05)")
    g.add_argument("--power", type=_open_unit("--power"), default=0.8, help="power (default 0.8)")
    g.add_argument("--json", action="store_true", help="print JSON instead of text")

    e = sub.add_parser("estimate", help="the API calls, tokens and cost of each stage, before anything is paid",
                       description="From the config (as snakemake reads it) and the question source: each API "
                                   "stage's requests, their prompt and completion tokens and their cost at "
                                   "models.<name>.price, expected and at most (judgeflow.workflow.estimate).")
    e.add_argument("--configfile", nargs="+", default=["config/config.yaml"],
                   help="the config files, merged in order as snakemake merges them (default config/config.yaml)")
    e.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", type=_option,
                   help="overrides as snakemake's --config takes them (dotted keys allowed: a.b=1)")
    e.add_argument("--pilot", default=None, help="a run's ledger (logs/<run>/costs.jsonl): tokens per call as "
                                                 "measured there, for the stages and models it holds")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _model_args(p, required):
    p.add_argument("--a", type=_positive("--a"), required=required, help="Beta-judge model: prior a > 0")
    p.add_argument("--b", type=_positive("--b"), required=required, help="Beta-judge model: prior b > 0")
    p.add_argument("--p0", type=_closed_unit("--p0"), required=required, help="P(judge YES | X=0)")
    p.add_argument("--p1", type=_closed_unit("--p1"), required=required, help="P(judge YES | X=1)")


def _prob_list(name):
    def parse(text):
        try:
            v = [float(t) for t in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be comma-separated numbers, got {text!r}") from None
        if any(not (0 <= x <= 1) or math.isnan(x) for x in v) or sum(v) > 1 + 1e-9:
            raise argparse.ArgumentTypeError(f"{name} must be probabilities in [0, 1] summing to at most 1, "
                                             f"got {text}")
        return v
    return parse


def _sizes(text):
    try:
        v = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pool-sizes must be comma-separated integers, got {text!r}") from None
    if any(x < 0 for x in v):
        raise argparse.ArgumentTypeError(f"--pool-sizes must be integers >= 0, got {text}")
    return v


def _pool_args(o):
    g = o.add_argument_group("finite pools of accepted draws (default: unlimited)")
    g.add_argument("--questions", type=_int_at_least("--questions", 1), default=None,
                   help="questions drawn; the accepted draws at n follow P(N = n) from --accept-probs or from "
                        "the Beta-judge model (--a --b --p0 --p1), one multinomial draw per run")
    g.add_argument("--accept-probs", type=_prob_list("--accept-probs"), default=None,
                   help="P(N=1),...,P(N=n_max), comma-separated")
    g.add_argument("--pool-sizes", type=_sizes, default=None, help="accepted draws at n = 1, 2, ..., comma-separated")


def _tp_model(args) -> int:
    from judgeflow.oracle.tp.model import curve_table

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


def _model_given(args) -> bool | None:
    """True: all of --a --b --p0 --p1 given; False: none; None: some but not all."""
    given = [v is not None for v in (args.a, args.b, args.p0, args.p1)]
    return any(given) and (all(given) or None)


def _pools(args, parser: argparse.ArgumentParser, n_max):
    """(pool, questions, accept_probs) for simulate() from the pool options; errors name the option."""
    from judgeflow.oracle.tp.model import p_first_accept

    if args.pool_sizes is not None and args.questions is not None:
        parser.error("argument --pool-sizes: give either --pool-sizes or --questions, not both")
    if args.pool_sizes is not None:
        if len(args.pool_sizes) != n_max:
            parser.error(f"argument --pool-sizes: needs {n_max} sizes (one per n of the curve), "
                         f"got {len(args.pool_sizes)}")
        return args.pool_sizes, None, None
    if args.questions is None:
        if args.accept_probs is not None:
            parser.error("argument --accept-probs: needs --questions")
        return None, None, None
    if args.accept_probs is not None:
        if len(args.accept_probs) != n_max:
            parser.error(f"argument --accept-probs: needs {n_max} probabilities (one per n of the curve), "
                         f"got {len(args.accept_probs)}")
        return None, args.questions, args.accept_probs
    if not _model_given(args):
        parser.error("argument --questions: needs --accept-probs or the model (--a --b --p0 --p1)")
    probs = [p_first_accept(n, args.a, args.b, args.p0, args.p1) for n in range(1, n_max + 1)]
    return None, args.questions, probs


def _oracle_budget(args, parser: argparse.ArgumentParser) -> int:
    from judgeflow.oracle.tp.model import tp_curve
    from judgeflow.oracle.tp.simulate import simulate, true_nstar
    from judgeflow.oracle.tp.strategies import STRATEGIES, make_strategy

    if _model_given(args) is None:
        parser.error("arguments --a --b --p0 --p1: give all four or none")
    if args.curve is None:
        if not _model_given(args):
            parser.error("argument --curve: required (or the model --a --b --p0 --p1 with --n-max)")
        args.curve = tp_curve(args.n_max or 15, a=args.a, b=args.b, p0=args.p0, p1=args.p1)
    pool, questions, accept_probs = _pools(args, parser, len(args.curve))
    options = dict(args.option)
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    names = [n for n in STRATEGIES if not STRATEGIES[n].needs_proxy] if args.strategy == "all" else [args.strategy]
    if STRATEGIES[names[0]].needs_proxy and args.proxy_auc is None:
        parser.error(f"argument --strategy: {names[0]} needs proxy scores (--proxy-auc)")
    runs = [(n, None) for n in names]
    if args.proxy_auc is not None and not STRATEGIES[names[0]].needs_proxy:
        runs.append(("prediction_powered", args.proxy_auc))
    elif args.proxy_auc is not None:
        runs = [(names[0], args.proxy_auc)]
    if args.strategy == "all":
        known = {"batch_size"}.union(*(STRATEGIES[n].defaults for n, _ in runs))
        unknown = sorted(set(options) - known)
        if unknown:
            parser.error(f"argument --option: no strategy has the option(s) {', '.join(unknown)}")
    out = {}
    for name, auc in runs:
        # options meant for one strategy are not passed to the others
        own = {k: v for k, v in options.items() if k == "batch_size" or k in STRATEGIES[name].defaults}
        if args.strategy != "all" and name == args.strategy:
            own = options
        try:  # options are checked by building the strategy once; every other input is checked already
            make_strategy(name, n_max=len(args.curve), threshold=args.threshold, delta=args.delta,
                          budget=args.budget, **own)
        except ValueError as e:
            parser.error(f"argument {'--batch-size' if 'batch_size' in str(e) else '--option'}: {e}")
        key = name if auc is None else f"{name} (proxy AUC {auc:g})"
        out[key] = simulate(args.curve, args.threshold, args.delta, name, runs=args.runs, seed=args.seed,
                            budget=args.budget, abstain_rate=args.abstain_rate, keep_runs=not args.no_runs,
                            pool=pool, questions=questions, accept_probs=accept_probs,
                            proxy_auc=auc, proxy_shift=args.proxy_shift if auc is not None else 0.0, **own)
    pools = {"pool_sizes": pool, "questions": questions, "accept_probs": accept_probs}
    if len(out) > 1:
        result = {"curve": args.curve, "threshold": args.threshold, "delta": args.delta,
                  "true_nstar": true_nstar(args.curve, args.threshold), **pools, "strategies": out}
        if args.proxy_auc is not None:
            base, pp = out[runs[0][0]], out[f"prediction_powered (proxy AUC {args.proxy_auc:g})"]
            result["proxy_vs_no_proxy"] = {"median_calls_ratio": pp["median_calls"] / max(base["median_calls"], 1)}
            _side_by_side(out)
    else:
        result = {"curve": args.curve, **pools, **next(iter(out.values()))}
    print(json.dumps(result, indent=1))
    return 0


def _side_by_side(out) -> None:
    print(f"{'strategy':<42}{'median calls':>13}{'p90 calls':>11}{'error':>8}{'exact':>7}  N*", file=sys.stderr)
    for name, r in out.items():
        dist = " ".join(f"{k}:{v}" for k, v in r["nstar_counts"].items())
        print(f"{name:<42}{r['median_calls']:>13,.0f}{r['p90_calls']:>11,.0f}{r['error_rate']:>8.3f}"
              f"{r['exact_rate']:>7.3f}  {dist}", file=sys.stderr)


def _plan(args, parser: argparse.ArgumentParser) -> int:
    from judgeflow.oracle.tp.plan import plan

    model = None
    if args.fit:
        if _model_given(args):
            parser.error("argument --fit: give either --fit or --a --b --p0 --p1, not both")
        try:
            with open(args.fit) as fh:
                doc = json.load(fh)
            model = {k: float(doc[k]) for k in ("a", "b", "p0", "p1")}
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            parser.error(f"argument --fit: {args.fit} is not a fit.json with a, b, p0, p1 ({e})")
    elif _model_given(args):
        model = {"a": args.a, "b": args.b, "p0": args.p0, "p1": args.p1}
    else:
        parser.error("the model: give --a --b --p0 --p1 (all four) or --fit fit.json")
    try:
        result = plan(model["a"], model["b"], model["p0"], model["p1"], threshold=args.threshold, delta=args.delta,
                      n_max=args.n_max, target=args.target, proxy_aucs=args.proxy_auc, power=args.power,
                      runs=args.runs, seed=args.seed, max_questions=args.max_questions)
    except ValueError as e:
        print(f"judgeflow plan: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


def _read_pilot(path: str) -> list[dict]:
    """A pilot's records: a tree_search folder -> root outcomes of its rounds' gates; a .jsonl, .json (a list,
    or {"rows": [...]}) or .csv file -> its records as they are (root outcomes or gate comparison rows)."""
    import csv
    from pathlib import Path

    from judgeflow.refining.gate_study import root_outcomes
    from judgeflow.workflow.io import read_jsonl

    p = Path(path)
    if p.is_dir():
        finals, comparisons = [], []
        for f in sorted(p.glob("round-*/gate-*/final.jsonl")):
            rnd = int(f.parent.parent.name.removeprefix("round-"))  # a folder round-x: ValueError
            finals += read_jsonl(f)
            cpath = f.with_name("comparisons.jsonl")
            comparisons += [{**c, "round": rnd} for c in (read_jsonl(cpath) if cpath.exists() else [])]
        if not finals:
            raise ValueError(f"{path} has no round-*/gate-*/final.jsonl")
        return root_outcomes(finals, comparisons)
    if p.suffix == ".csv":
        with open(p, newline="") as fh:
            return list(csv.DictReader(fh))
    if p.suffix == ".json":
        with open(p) as fh:
            doc = json.load(fh)
        rows = doc.get("rows") if isinstance(doc, dict) else doc
        if not isinstance(rows, list):
            raise ValueError(f"{path}: a JSON list of records, or an object with one under 'rows'")
        return rows
    return read_jsonl(p)


def _estimate(args, parser: argparse.ArgumentParser) -> int:
    import yaml

    from judgeflow.errors import ConfigError, InputError
    from judgeflow.workflow import settings as st
    from judgeflow.workflow.estimate import estimate, table

    raw: dict = {}
    for path in args.configfile:
        try:
            with open(path, encoding="utf-8") as fh:
                raw = st.deep_merge(raw, yaml.safe_load(fh) or {})
        except OSError as e:
            parser.error(f"argument --configfile: {e}")
    for key, value in args.config:
        node: dict = {}
        parts = key.split(".")
        cur = node
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
        raw = st.deep_merge(raw, node)
    if args.pilot is not None and not os.path.isfile(args.pilot):
        parser.error(f"argument --pilot: {args.pilot}: no such file")
    try:
        rows = estimate(st.validate(raw), pilot=args.pilot)
    except (ConfigError, InputError) as e:
        print(f"judgeflow estimate: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(table(rows))
    return 0


def _plan_gates(args, parser: argparse.ArgumentParser) -> int:
    from judgeflow.refining.gate_study import plan_gates

    if (args.discordance is None) == (args.pilot is None):
        parser.error("argument --discordance: give --discordance or --pilot, exactly one")
    if args.gates is not None and args.pilot is None:
        parser.error("argument --gates: only with --pilot")
    try:
        pilot = _read_pilot(args.pilot) if args.pilot is not None else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        parser.error(f"argument --pilot: {args.pilot}: {e}")
    try:
        plan = plan_gates(args.effect, args.discordance, pilot, args.alpha, args.power, gates=args.gates,
                          baseline=args.baseline)
    except (ValueError, KeyError, TypeError) as e:
        word = re.match(r"\w+", str(e))
        name = word[0] if word and word[0] in ("effect", "discordance", "gates", "baseline", "alpha", "power") \
            else "pilot"
        parser.error(f"argument --{name}: {e}")
    if args.json:
        print(json.dumps(plan, indent=1))
        return 0
    un, pilot_ = plan["unpaired"], plan["pilot"]
    print(f"detect a change of {plan['effect']:g} in the share of roots whose final the oracle prefers "
          f"(two-sided, alpha {plan['alpha']:g}, power {plan['power']:g}); discordance {plan['discordance']:.4g} "
          f"({plan['discordance_from']})")
    print(f"paired   (same roots under both gates, McNemar): {plan['paired']['n_roots']:>7} roots")
    print(f"unpaired (separate roots, {un['p_a']:.3g} vs {un['p_b']:.3g}, {un['baseline_from']}): "
          f"{un['n_per_gate']:>7} roots per gate, {un['n_total']} in all")
    if pilot_ is not None:
        print(f"pilot {pilot_['gate_a']} vs {pilot_['gate_b']}: {pilot_['n_roots']} roots, "
              f"{pilot_['discordant_b']} preferred under {pilot_['gate_a']} only, {pilot_['discordant_c']} under "
              f"{pilot_['gate_b']} only (observed {pilot_['observed_effect']:+.3g}): power "
              f"{pilot_['achieved_power']:.2f} to detect {plan['effect']:g} at its size")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "tp-model":
        return _tp_model(args)
    # the parser of the chosen command, from build_parser's one subparsers action
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = subparsers.choices[args.command]
    if args.command == "plan":
        return _plan(args, sub)
    if args.command == "plan-gates":
        return _plan_gates(args, sub)
    if args.command == "estimate":
        return _estimate(args, sub)
    return _oracle_budget(args, sub)


if __name__ == "__main__":
    sys.exit(main())
