"""How often the embedded policy meets each IFEval constraint: the pass rate per instruction.

For each instruction (every family, or --instructions), the composed source puts it on --tasks
base tasks (one instruction per question, kwargs drawn per question); the policy
(SmolLM2-135M-Instruct, the hf backend, batched) answers each --samples times with the sampling
settings of the draws, and the exact IFEval checker decides. Prints one row per instruction:
answers, passed, rate and its 95 % Clopper-Pearson interval (docs/questions.md's table), then the
instructions whose rate lies in [0.1, 0.9], the ones the demo can learn from.

    .venv/bin/python benchmarks/constraint_pass_rates.py [--tasks 24] [--samples 1] [--max-new-tokens 32] [--dtype bfloat16]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instructions", nargs="+", default=["change_case", "punctuation", "startend",
                                                          "detectable_content", "detectable_format", "keywords",
                                                          "length_constraints"])
    ap.add_argument("--tasks", type=int, default=24)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=32, help="the demo's sampling.max_new_tokens")
    ap.add_argument("--dtype", default="bfloat16", help="the demo's models.smollm2.dtype")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--model", default=str(ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    from scipy.stats import binomtest

    from judgeflow.generation.prompting import stable_seed
    from judgeflow.judging.verifier import verify
    from judgeflow.models import GenRequest, Sampling
    from judgeflow.models.hf import HFModel
    from judgeflow.questions.composed import base_tasks, compose, expand
    from judgeflow.questions.sources import instruction_criteria
    from judgeflow.workflow.settings import Composed

    ids = expand(a.instructions)
    n_tasks = min(a.tasks, len(base_tasks(None)))
    questions = []
    for iid in ids:
        rows = compose(Composed(count=n_tasks, instructions=[iid], per_question=1, kwargs={}, tasks=None, seed=0))
        for r in rows:
            questions.append({**r, "criteria": instruction_criteria(r["instruction_id_list"], r["kwargs"],
                                                                   r["question_id"], r["registry"])})
    model = HFModel("policy", a.model, device="cpu", dtype=a.dtype, batch_size=a.batch_size, threads=a.threads)
    sampling = Sampling(a.max_new_tokens, a.temperature, 0.95)
    reqs = [GenRequest.chat(q["prompt"], sampling=sampling, seed=stable_seed("pass-rate", q["question_id"], s))
            for q in questions for s in range(a.samples)]
    t0 = time.time()
    gens = model.generate(reqs, desc="pass rates")
    seconds = time.time() - t0
    rows = []
    for iid in ids:
        passed = n = 0
        for i, q in enumerate(questions):
            if q["instruction_id_list"] != [iid]:
                continue
            for s in range(a.samples):
                v = verify(q, gens[i * a.samples + s].text)
                n += 1
                passed += bool(v and v["all"])
        ci = binomtest(passed, n).proportion_ci(method="exact")
        rows.append({"instruction": iid, "answers": n, "passed": passed, "rate": round(passed / n, 3),
                     "ci_low": round(float(ci.low), 3), "ci_high": round(float(ci.high), 3)})
    tokens = sum(g.completion_tokens for g in gens)
    if a.json:
        print(json.dumps({"rows": rows, "seconds": round(seconds, 1), "tokens": tokens}))
        return 0
    print(f"{len(reqs)} answers, {tokens} tokens in {seconds:.0f} s ({tokens / seconds:.0f} tok/s), "
          f"max_new_tokens={a.max_new_tokens}, temperature={a.temperature}, dtype={a.dtype}")
    print("| instruction | answers | passed | rate | 95% CI |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| `{r['instruction']}` | {r['answers']} | {r['passed']} | {r['rate']:.2f} | "
              f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] |")
    print("between 0.1 and 0.9:", ", ".join(r["instruction"] for r in rows if 0.1 <= r["rate"] <= 0.9))
    return 0


if __name__ == "__main__":
    sys.exit(main())
