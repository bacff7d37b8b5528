"""Issue 6's figures: the oracle stages (clean_questions, then label_oracle with an LLM oracle)
over the openai backend against tests/fault_server.py with a share of the calls faulted, compared
with a fault-free run; and, with --bad-input, how each case of tests/test_bad_input.py ended.

    .venv/bin/python benchmarks/faults.py                      # 300 questions, 30 % faulted
    .venv/bin/python benchmarks/faults.py --questions 100 --rate 0.5 --json
    .venv/bin/python benchmarks/faults.py --bad-input
    .venv/bin/python benchmarks/faults.py --upstream http://127.0.0.1:8000/v1 --model MODEL  # a real server

Printed: calls faulted (by kind), retries made (as the client counted them), items lost (questions
with no cleaning verdict + accepted draws with no label record: must be 0), calls paid twice
(upstream answers for a request already answered: must be 0), and whether every output equals
the fault-free run's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fault_server import KINDS, FaultServer, fingerprint, paths, run_clean, run_label, stage_config, \
    write_draws, write_questions  # noqa: E402
from judgeflow.workflow.io import read_jsonl  # noqa: E402


def one_run(root: Path, n: int, rate: float, seed: int, upstream: str | None, stall_s: float,
            timeout: float, kinds: tuple[str, ...], concurrency: int, model: str) -> dict:
    p = paths(root)
    qs = write_questions(p["questions"], n)
    t0 = time.perf_counter()
    with FaultServer(rate=rate, seed=seed, upstream=upstream, stall_s=stall_s, kinds=kinds) as fs:
        config = stage_config(root, fs.url, timeout=timeout, batch_size=32, max_concurrency=concurrency,
                              model=model)
        run_clean(config, p)
        write_draws(p["draws"], read_jsonl(p["kept"]))
        run_label(config, p)
        server = fs.summary()
    wall = time.perf_counter() - t0
    judged = {q["question_id"] for f in ("kept", "heldout", "rejected") for q in read_jsonl(p[f])}
    accepted = {d["draw_id"] for d in read_jsonl(p["draws"]) if d["first_accept"]}
    labelled = {r["draw_id"] for r in read_jsonl(p["labels"])}
    stats = [json.loads(p["cleaning"].read_text())["models"]["flaky"],
             json.loads(p["nstar"].read_text())["models"]["flaky"]]
    failed: dict = {}
    for s in stats:
        for k, v in s["failed_attempts"].items():
            failed[k] = failed.get(k, 0) + v
    return {"wall_s": round(wall, 2), "server": server, "questions": len(qs), "accepted_draws": len(accepted),
            "items_lost": len({q["question_id"] for q in qs} - judged) + len(accepted - labelled),
            "client": {"attempts": sum(s["attempts"] for s in stats), "retries": sum(s["retries"] for s in stats),
                       "calls": sum(s["calls"] for s in stats), "failed_attempts": failed,
                       "unusable": {k: sum(s["unusable"].get(k, 0) for s in stats) for k in ("empty", "truncated")}},
            "fingerprint": fingerprint(p)}


def faults(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="jf-faults-") as tmp:
        common = (args.seed, args.upstream, args.stall, args.timeout, tuple(args.kinds.split(",")), args.concurrency,
                  args.model)
        ref = one_run(Path(tmp) / "ref", args.questions, 0.0, *common)
        got = one_run(Path(tmp) / "faulted", args.questions, args.rate, *common)
    s = got["server"]
    return {"rate": args.rate, "seed": args.seed, "kinds": args.kinds, "upstream": args.upstream or "stand-in", "questions": got["questions"],
            "accepted_draws": got["accepted_draws"], "attempts": s["attempts"],
            "calls_faulted": s["faulted"], "faults": s["faults"], "retries_made": got["client"]["retries"],
            "upstream_calls": s["upstream_calls"], "distinct_requests": s["distinct_requests"],
            "calls_paid_twice": s["paid_twice"], "items_lost": got["items_lost"],
            "unusable_answers": got["client"]["unusable"], "client_failed_attempts": got["client"]["failed_attempts"],
            "outputs_identical_to_fault_free_run": got["fingerprint"] == ref["fingerprint"],
            "wall_s": {"fault_free": ref["wall_s"], "faulted": got["wall_s"]}}


def bad_input() -> list[dict]:
    from test_bad_input import CASES, try_case

    out = []
    with FaultServer() as fs, tempfile.TemporaryDirectory(prefix="jf-bad-") as tmp:
        for i, case in enumerate(CASES):
            try:
                ended = try_case(case, Path(tmp) / str(i), fs.url)
                ok = True
            except AssertionError as e:
                ended, ok = f"NOT AS EXPECTED: {str(e).splitlines()[0]}", False
            out.append({"case": case.name, "ended": ended.replace(tmp, "<tmp>"), "as_expected": ok})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--rate", type=float, default=0.3, help="share of attempts faulted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=2.0, help="the client's per-attempt timeout (s)")
    ap.add_argument("--stall", type=float, default=2.5, help="how long a stalled attempt hangs (s)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"fault kinds (default: all of {','.join(KINDS)})")
    ap.add_argument("--concurrency", type=int, default=8, help="the client's max_concurrency")
    ap.add_argument("--upstream", help="proxy to this OpenAI-compatible URL instead of the stand-in")
    ap.add_argument("--model", default="standin", help="model name sent (with --upstream: what it serves)")
    ap.add_argument("--bad-input", action="store_true", help="run the bad-input table instead")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.bad_input:
        rows = bad_input()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                flag = "ok " if r["as_expected"] else "BAD"
                print(f"{flag} {r['case']:<48} {r['ended'][:150]}")
            print(f"{len(rows)} bad inputs tried, {sum(r['as_expected'] for r in rows)} ended as expected")
        return 0 if all(r["as_expected"] for r in rows) else 1
    r = faults(args)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"questions {r['questions']}, accepted draws {r['accepted_draws']}, fault rate {r['rate']}, seed {r['seed']}")
        print(f"attempts                 {r['attempts']}")
        print(f"calls faulted            {r['calls_faulted']}  {r['faults']}")
        print(f"retries made             {r['retries_made']}  (client: {r['client_failed_attempts']})")
        print(f"upstream calls           {r['upstream_calls']} for {r['distinct_requests']} distinct requests")
        print(f"calls paid twice         {r['calls_paid_twice']}")
        print(f"items lost               {r['items_lost']}")
        print(f"unusable answers         {r['unusable_answers']} (recorded, counted; abstains, never labels)")
        print(f"outputs = fault-free run {r['outputs_identical_to_fault_free_run']}")
        print(f"wall time                {r['wall_s']['fault_free']} s fault-free, {r['wall_s']['faulted']} s faulted")
    good = r["items_lost"] == 0 and r["calls_paid_twice"] == 0 and r["outputs_identical_to_fault_free_run"]
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
