"""Benchmark: out-of-fold quality of the trained judge per feature set, on real labelled responses.

Composed questions with the demo's instructions (config/config.yaml questions.composed), responses
sampled by the embedded policy with the demo's sampling (32 tokens, temperature 0.8), labels from the
exact verifier. Features are read once with the widest set (the last and the middle layer, each at
the last token and averaged over the response) and sliced into:
  last layer, last token     the features of a transformers sequence-classification head
  + middle layer             the last token of the last and the middle layer (FeatureSpec.default)
  + mean pooling             the last layer at the last token and averaged over the response
  all                        both layers, both poolings
  instruction id only        a reference: a one-hot of the criterion's instruction (its base rate)
Each is fitted by trained_judge.fit (nested grouped CV) and scored by trained_judge.quality
(AUC, Brier against the constant, kappa at Youden's threshold, question-bootstrap intervals);
dAUC is the paired difference to the first set, with a question-bootstrap interval.
    .venv/bin/python benchmarks/trained_judge.py [--questions 200] [--responses 2] [--per-question 1]
                                                 [--cache FILE.npz]
Needs resources/models/SmolLM2-135M-Instruct (make demo, or the prepare_model rule).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from labelled import labelled_responses  # noqa: E402
from judgeflow.models.hf import HFModel  # noqa: E402
from judgeflow.judging.trained import FeatureSpec, features, fit, judge_text, quality, youden_threshold  # noqa: E402


def labelled_data(model: HFModel, n_questions: int, n_responses: int, per_question: int) -> dict:
    t0 = time.perf_counter()
    rows = labelled_responses(model, n_questions, n_responses, per_question=per_question)
    t_gen = time.perf_counter() - t0
    convs = [judge_text(r["prompt"], r["criterion"], r["response"]) for r in rows]
    y = [r["x"] for r in rows]
    groups = [r["question_id"] for r in rows]
    instr = [r["instruction_id"] for r in rows]
    wide = FeatureSpec.default(model.model)  # its layers, with both poolings: sliced below
    spec = FeatureSpec(layers=wide.layers, pooling=("last", "mean"))
    t0 = time.perf_counter()
    X = features(model.model, model.tokenizer, convs, spec, batch_size=16)
    t_feat = time.perf_counter() - t0
    print(f"{len(convs)} (response, criterion) pairs: generated in {t_gen:.0f} s, features ({X.shape[1]}) in {t_feat:.0f} s",
          flush=True)
    return {"X": X, "y": np.array(y), "groups": np.array(groups), "instr": np.array(instr),
            "layers": np.array(spec.layers)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "resources/models/SmolLM2-135M-Instruct"))
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--responses", type=int, default=2)
    ap.add_argument("--per-question", type=int, default=1, help="instructions per question (criteria per response)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, help="an .npz to reuse (written when missing)")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()

    if args.cache and args.cache.exists():
        data = dict(np.load(args.cache))
    else:
        model = HFModel("judge", args.model, device="cpu", dtype="float32", batch_size=16, threads=args.threads)
        data = labelled_data(model, args.questions, args.responses, args.per_question)
        if args.cache:
            np.savez(args.cache, **data)
    X, y, g = data["X"], data["y"], data["groups"]
    h = X.shape[1] // 4  # blocks: [last layer: last, mean | middle layer: last, mean]
    kinds = sorted(set(data["instr"]))
    onehot = (data["instr"][:, None] == np.array(kinds)[None, :]).astype(float)
    sets = {
        "last layer, last token": X[:, :h],
        "+ middle layer (last token)": np.hstack([X[:, :h], X[:, 2 * h:3 * h]]),
        "+ mean pooling (last layer)": X[:, :2 * h],
        "all: 2 layers x (last, mean)": X,
        "instruction id only (reference)": onehot,
    }
    print(f"n = {len(y)} responses, {len(set(g))} questions, {int(y.sum())} meet their criterion; "
          f"layers {[int(x) for x in data['layers']]}, hidden {h}")
    header = (f"{'features':34s} {'dim':>5s} {'AUC [95% CI]':>22s} {'dAUC [95% CI]':>24s} {'Brier':>6s} "
              f"{'const':>6s} {'kappa':>6s} {'C':>6s} {'s':>4s}")
    print(header)
    print("-" * len(header))
    names, member = np.unique(g, return_inverse=True)
    rng = np.random.default_rng(args.seed)
    weights = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=1000)[:, member]
    results, first = [], None
    for name, Xs in sets.items():
        t0 = time.perf_counter()
        res = fit(Xs, y, g, seed=args.seed)
        threshold = youden_threshold(y, res.oof)
        q = quality(y, res.oof, g, threshold, seed=args.seed, n_boot=1000)
        dt = time.perf_counter() - t0
        lo, hi = q["auc_ci"]
        first = res.oof if first is None else first
        diff = roc_auc_score(y, res.oof) - roc_auc_score(y, first)
        reps = [roc_auc_score(y, res.oof, sample_weight=w) - roc_auc_score(y, first, sample_weight=w)
                for w in weights]
        dlo, dhi = np.percentile(reps, [2.5, 97.5])
        print(f"{name:34s} {Xs.shape[1]:5d} {q['auc']:6.3f} [{lo:.3f}, {hi:.3f}] {diff:+7.3f} [{dlo:+.3f}, "
              f"{dhi:+.3f}] {q['brier']:6.3f} {q['brier_constant']:6.3f} {q['kappa']:6.3f} {res.C:6.0e} {dt:4.0f}",
              flush=True)
        results.append({"features": name, "dim": int(Xs.shape[1]), "C": res.C, "C_per_fold": res.C_per_fold,
                        "auc_diff_vs_first": float(diff), "auc_diff_ci": [float(dlo), float(dhi)],
                        **{k: q[k] for k in ("n", "n_questions", "n_pos", "auc", "auc_ci", "brier",
                                             "brier_constant", "brier_diff_ci", "p1", "p0", "kappa",
                                             "kappa_ci", "threshold")}})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
