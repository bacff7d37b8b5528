"""Gate sharing in the SPaR tree search, measured on the real model: generation calls of one search for
all gates together against the strictest gate's search alone, and against one search per gate.

Runs judgeflow.refining.tree_search.search_trees three ways on the first --roots rejected responses of a finished
demo run (its config, its judges, the real SmolLM2-135M refiner), counting the refiner's generations:

  shared:    one search, every gate of refining.tree_search.gates (what the workflow runs);
  strictest: a search with the strictest gate alone;
  per gate:  a search per gate, alone (what a run per gate would cost).

The issue's figure: shared <= 1.1 x strictest. Checks too that each gate's exit nodes in the shared
search are those of its own search (same ids, same texts).

    .venv/bin/python benchmarks/tree_search_sharing.py [--results results/demo] [--roots 12] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from judgeflow.models import open_models  # noqa: E402
from judgeflow.refining import tree_search as ts  # noqa: E402
from judgeflow.workflow import settings as jf_settings  # noqa: E402
from judgeflow.workflow.io import questions_by_id, read_jsonl  # noqa: E402
from judgeflow.workflow.settings import Gate  # noqa: E402


class Counting:
    """A model that counts the texts it is asked to generate."""

    def __init__(self, model):
        self.model, self.calls = model, 0
        self.name, self.supports_prefix = model.name, model.supports_prefix

    def generate(self, reqs, desc="generate"):
        self.calls += len(reqs)
        return self.model.generate(reqs, desc=desc)

    def stats(self):
        return self.model.stats()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results/demo", help="a finished run's results/<run> directory")
    ap.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--roots", type=int, default=12, help="rejected responses to search (the first ones)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    res = Path(a.results)
    if not (res / "verdicts/responses/shard-0.aggregate.jsonl").exists():
        ap.error(f"--results {res}: no finished run there (run `make demo` first)")
    cfg = jf_settings.load(a.config)
    gates = sorted(g["k"] for g in cfg["refining"]["tree_search"]["gates"])
    n_judges = len(cfg["judging"]["judges"])
    rejected = {x["response_id"] for x in read_jsonl(res / "verdicts/responses/shard-0.aggregate.jsonl")
                if not x["accepted"]}
    roots = [r for r in read_jsonl(res / "responses/shard-0.jsonl") if r["response_id"] in rejected][:a.roots]
    verdicts = read_jsonl(res / "verdicts/responses/shard-0.jsonl")
    questions = questions_by_id(res / "questions/kept.jsonl")
    names = [cfg["refining"]["model"], *(j["model"] for j in cfg["judging"]["judges"])]
    runs = {"shared": gates, "strictest": [gates[-1]], **{f"alone {ts.gate_name(k, n_judges)}": [k] for k in gates}}
    out, trees = {}, {}
    typed = cfg.typed()
    opened = open_models({n: typed.models[n] for n in names}, cfg["cache_dir"])
    with opened as models, tempfile.TemporaryDirectory() as tmp:
        for name, ks in runs.items():
            refining = typed.refining.model_copy(update={"tree_search": typed.refining.tree_search.model_copy(
                update={"gates": [Gate(k=k) for k in ks]})})
            refiner = Counting(models[cfg["refining"]["model"]])
            t0 = time.perf_counter()
            path = f"{tmp}/{name.replace(' ', '_')}.jsonl"
            ts.search_trees(roots, verdicts, questions, refining, typed.judging, typed.seed, refiner, models, path)
            out[name] = {"gates": [ts.gate_name(k, n_judges) for k in ks], "generations": refiner.calls,
                         "seconds": round(time.perf_counter() - t0, 1)}
            trees[name] = ts.read_trees([path])
    rule = typed.refining.tree_search.exit
    per_gate = sum(out[f"alone {ts.gate_name(k, n_judges)}"]["generations"] for k in gates)
    same_exits = all(
        [(f["exit_node_id"], f["final_text"]) for f in ts.finals(trees["shared"], k, n_judges, rule)]
        == [(f["exit_node_id"], f["final_text"]) for f in ts.finals(trees[f"alone {ts.gate_name(k, n_judges)}"],
                                                                    k, n_judges, rule)]
        for k in gates)
    summary = {"roots": len(roots), "runs": out, "shared_over_strictest":
               round(out["shared"]["generations"] / max(1, out["strictest"]["generations"]), 4),
               "per_gate_searches": per_gate, "saved_by_sharing": per_gate - out["shared"]["generations"],
               "same_exits_as_own_search": same_exits,
               "target": "shared <= the sum of per-gate searches, and each gate's exits its own search's"}
    for name, r in out.items():
        print(f"{name:>14}: {r['generations']:5d} generations, {r['seconds']:7.1f} s   (gates {', '.join(r['gates'])})")
    print(f"shared / strictest alone = {summary['shared_over_strictest']}; a search per gate: "
          f"{per_gate} generations, {summary['saved_by_sharing']} saved by sharing; each gate's exits the same "
          f"as its own search's: {same_exits}")
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if out["shared"]["generations"] <= per_gate and same_exits else 1


if __name__ == "__main__":
    raise SystemExit(main())
