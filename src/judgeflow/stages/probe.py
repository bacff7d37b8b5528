"""probe: the policy's hidden state at each question's last prompt token (probe.layer, optional
PCA) -> a regularized logistic probe of the question's p = P(X=1), p1 and p0, fitted and scored
out of fold over questions; metrics against the constant (prior-mean) baseline with paired
bootstrap intervals, and per-question predictions (the probe's proxy for the replay)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from judgeflow.errors import ConfigError
from judgeflow.oracle.draws import DRAW_FIELDS
from judgeflow.oracle.probe import features, fit_probe, predicted_tp, question_samples
from judgeflow.workflow.io import questions_by_id, read_jsonl, read_jsonl_many, write_csv, write_json, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings

log = logging.getLogger(__name__)
METRIC_COLUMNS = ("target", "questions", "draws", "brier", "brier_baseline", "brier_diff", "brier_diff_ci_low",
                  "brier_diff_ci_high", "log_loss", "log_loss_baseline", "log_loss_diff_ci_low",
                  "log_loss_diff_ci_high", "verdict")


def run(inp, out, settings: Settings, job: Job) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pcfg = settings.probe
    draws = read_jsonl_many(inp.draws, required=(*DRAW_FIELDS, "accepted"))
    labels: dict[str, dict] = {}
    for path in inp.labels:  # the strategy's and the curve's labels, then Best-of-N's: one per draw
        for rec in read_jsonl(path, required=("draw_id", "label")):
            labels.setdefault(rec["draw_id"], rec)
    samples = question_samples(draws, list(labels.values()))
    questions = questions_by_id(inp.kept)
    ids = sorted(samples)
    name = settings.draws.model
    spec = settings.models[name] if name is not None else None  # null = sampling.model: resolved by validation
    if spec is None or spec.backend != "hf":  # checked where the settings are validated (probe.enabled)
        raise ConfigError(f"probe.enabled: the probe reads the policy's hidden states with transformers; "
                          f"draws.model '{name}' is no hf model")
    torch.set_num_threads(max(1, job.threads))
    tok = AutoTokenizer.from_pretrained(spec.path)
    model = AutoModelForCausalLM.from_pretrained(spec.path, torch_dtype=torch.float32).eval()
    feats = features(model, tok, [questions[q]["prompt"] for q in ids], layer=pcfg.layer,
                     system=settings.sampling.system_prompt)
    result = fit_probe(dict(zip(ids, feats)), samples, folds=pcfg.folds, pca=pcfg.pca,
                       Cs=tuple(pcfg.c_grid), seed=settings.seed, bootstrap=pcfg.bootstrap)
    preds = result.pop("predictions")
    write_jsonl(out.predictions, [{"question_id": q, **preds[q], "tp_accepted": predicted_tp(preds[q]["p"],
                                                                                            preds[q]["p0"],
                                                                                            preds[q]["p1"])}
                                  for q in ids])
    write_json(out.metrics, {**result, "layer": pcfg.layer, "pca": pcfg.pca, "hidden": int(feats.shape[1])})
    rows = []
    for target, m in result["metrics"].items():
        ci, lci = m.get("brier_diff_ci") or (None, None), m.get("log_loss_diff_ci") or (None, None)
        rows.append({"target": target, "questions": m["n_questions"], "draws": m["n_draws"], "brier": m["brier"],
                     "brier_baseline": m["brier_baseline"], "brier_diff": m["brier_diff"],
                     "brier_diff_ci_low": ci[0], "brier_diff_ci_high": ci[1], "log_loss": m["log_loss"],
                     "log_loss_baseline": m["log_loss_baseline"],
                     "log_loss_diff_ci_low": lci[0], "log_loss_diff_ci_high": lci[1],
                     "verdict": "the probe beats the constant baseline" if m["helps"] else
                     "the probe does not beat the constant baseline"})
    write_csv(out.table, rows, METRIC_COLUMNS)
    log.info("probe: %s", {t: m.get("helps") for t, m in result.get("metrics", {}).items()})
