"""An activation probe: does the policy's hidden state predict a question's Beta-judge parameters?

What is estimated. For each question the Beta-judge model has p = P(X=1) (the policy's draw is
truly right), p1 = P(Y=1 | X=1) and p0 = P(Y=1 | X=0) (the judges accept a right / a wrong draw).
`features` takes the policy's hidden state at the question's last prompt token (the chat-rendered
prompt with the generation prompt, i.e. the state the answer is generated from). `fit_probe` fits
three draw-level logistic regressions on it, every labelled draw carrying its question's feature
vector: "p" classifies the oracle's x over all labelled draws, "p1" the judges' y over the draws
with x = 1 and "p0" the judges' y over the draws with x = 0. `predicted_tp` turns a question's
(p, p0, p1) into P(X=1 | accepted), a proxy score for its accepted draws.

How regularization is chosen. Features are wide (hundreds to thousands of dimensions) and labels
few, so an unregularized fit overfits (a previous study failed that way). The model is
StandardScaler -> optional PCA -> L2-penalized LogisticRegression; the scaler and the PCA are fitted
on the training questions only (each question once: they are unsupervised and a question's feature
vector does not change with its number of draws), the classifier on the training draws (a
question's draws enter as weights, which is the draw-level likelihood exactly). The inverse
penalty C is chosen, separately inside every outer training fold, by an inner cross-validation
over the training fold's QUESTIONS (draw-level log loss; ties go to the stronger penalty). The
outer cross-validation is over questions too (a seeded shuffle of the labelled questions into
`folds` folds), so no question's draws are in both the training and the scoring part. A training
fold with one class only (or one question only) predicts its smoothed rate (k + 0.5) / (n + 1).

What is reported. Out of fold, per target: the Brier score and the log loss (draw level) of the
probe and of the baseline -- the constant smoothed prior mean (k + 0.5) / (n + 1) of the same
training fold -- their difference (probe - baseline; negative is better), and a paired bootstrap
95% percentile interval of each difference that resamples questions (seeded). `helps` is true only
when the whole Brier-difference interval lies below 0. It is false when the constant baseline is as
good as the probe (interval containing 0) or better (interval above 0): then the hidden state has
not been shown to carry information about that target beyond its mean, and a report must say so
rather than use the probe's predictions as if they did. Log losses are computed with predictions
clipped to [1e-12, 1 - 1e-12].
"""
from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

TARGETS = ("p", "p1", "p0")
_EPS = 1e-12


# --- features --------------------------------------------------------------------------------------

def _n_hidden_states(model) -> int | None:
    """len(outputs.hidden_states): the embeddings plus one per decoder layer, from the config."""
    config = getattr(model, "config", None)
    for cfg in (config, getattr(config, "text_config", None)):
        n = getattr(cfg, "num_hidden_layers", None)
        if isinstance(n, int):
            return n + 1
    return None


def _check_layer(layer: int, n_states: int) -> int:
    if not isinstance(layer, int | np.integer) or isinstance(layer, bool) or not -n_states <= layer < n_states:
        raise ValueError(
            f"features: layer={layer!r} is out of range: the model has {n_states} hidden states "
            f"(the embeddings and {n_states - 1} layers), so layer must be in {-n_states}..{n_states - 1}"
        )
    return int(layer)


def hidden_state_batches(model, ids: list[list[int]], batch_size: int):
    """Yield (row indices, hidden_states, attention mask) for batches of token-id lists, longest first.

    Rows are right-padded by hand and the pad positions masked, with position ids counted over the real
    tokens, so under the causal mask a row's states are the same alone or in a batch (up to float
    rounding). The model runs in eval mode under no_grad (its training flag is restored after)."""
    import torch

    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    try:
        device = next(model.parameters()).device
    except (AttributeError, StopIteration):
        device = torch.device("cpu")
    keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                width = max(len(ids[i]) for i in idx)
                input_ids = torch.zeros((len(idx), width), dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    input_ids[row, :len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                    mask[row, :len(ids[i])] = 1
                position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
                kwargs = {"logits_to_keep": 1} if keep_logits else {}
                res = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                            position_ids=position_ids.to(device), output_hidden_states=True, **kwargs)
                yield idx, res.hidden_states, mask
    finally:
        if was_training:
            model.train()


def features(model, tokenizer, prompts: list[str], *, layer: int = -1, system: str | None = None,
             batch_size: int = 8) -> np.ndarray:
    """The hidden state of `layer` (an index into `hidden_states`: 0 = embeddings, -1 = last) at the
    last token of each chat-rendered prompt, shape (len(prompts), hidden), float32.

    Each prompt becomes [system?, user] through the tokenizer's chat template with the generation
    prompt. Prompts are batched by length and right-padded by hand (pad positions are masked and
    come after the real tokens, so under the causal mask a row is the same alone or in a batch);
    the last real token is found from the attention mask."""
    import torch

    if batch_size < 1:
        raise ValueError(f"features: batch_size={batch_size} must be at least 1")
    n_states = _n_hidden_states(model)
    if n_states is not None:
        layer = _check_layer(layer, n_states)
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if not prompts:
        return np.zeros((0, int(hidden or 0)), dtype=np.float32)

    texts = []
    for prompt in prompts:
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": prompt}]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    # the chat template writes the special tokens itself
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if any(len(x) == 0 for x in ids):
        raise ValueError("features: a prompt rendered to no tokens")
    out: list[np.ndarray | None] = [None] * len(ids)
    for idx, states, mask in hidden_state_batches(model, ids, batch_size):
        if n_states is None:  # no layer count in the config: check against the output
            n_states = len(states)
            layer = _check_layer(layer, n_states)
        h = states[layer]
        last = mask.sum(dim=1) - 1  # right padding: the last real token of each row
        rows = h[torch.arange(len(idx), device=h.device), last.to(h.device)].float().cpu().numpy()
        for row, i in enumerate(idx):
            out[i] = rows[row]
    filled = [v for v in out if v is not None]
    assert len(filled) == len(out)  # the batches cover every prompt
    return np.stack(filled).astype(np.float32)


# --- samples ---------------------------------------------------------------------------------------

def _binary(value, what: str) -> int:
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer | float) and value in (0, 1):
        return int(value)
    raise ValueError(f"question_samples: {what} must be 0 or 1 (or true/false), got {value!r}")


def question_samples(draws: Iterable[Mapping], labels: Iterable[Mapping]) -> dict[str, list[tuple[int, int]]]:
    """{question_id: [(x, y), ...]} over the labelled draws: x the oracle's label, y = int(accepted),
    in the order of `draws`. A label of None (the oracle abstained) is skipped, and so is a label of a
    draw that is not in `draws`; a draw listed twice counts once (contradicting copies raise).
    Questions without a labelled draw are left out."""
    label_of: dict[str, int] = {}
    for rec in labels:
        if rec["label"] is None:
            continue
        x = _binary(rec["label"], f"the label of draw {rec['draw_id']!r}")
        if label_of.setdefault(rec["draw_id"], x) != x:
            raise ValueError(f"question_samples: draw {rec['draw_id']!r} has contradicting labels")
    seen: dict[str, tuple] = {}
    out: dict[str, list[tuple[int, int]]] = {}
    for d in draws:
        key = (d["question_id"], _binary(d["accepted"], f"`accepted` of draw {d['draw_id']!r}"))
        if d["draw_id"] in seen:
            if seen[d["draw_id"]] != key:
                raise ValueError(f"question_samples: draw {d['draw_id']!r} is listed twice with different "
                                 "question_id or accepted")
            continue
        seen[d["draw_id"]] = key
        if d["draw_id"] in label_of:
            out.setdefault(d["question_id"], []).append((label_of[d["draw_id"]], key[1]))
    return out


# --- the probe -------------------------------------------------------------------------------------

def _smoothed(k: float, n: float) -> float:
    return (k + 0.5) / (n + 1.0)


class _Constant:
    def __init__(self, rate: float):
        self.rate = rate

    def predict(self, F: np.ndarray) -> np.ndarray:
        return np.full(len(F), self.rate)


class _Probe:
    def __init__(self, pipeline):
        self.pipeline = pipeline

    def predict(self, F: np.ndarray) -> np.ndarray:
        return self.pipeline.predict_proba(F)[:, 1]


def _assign(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each of n items: a seeded shuffle dealt round-robin into k folds (sizes differ by <= 1)."""
    fold = np.empty(n, dtype=int)
    fold[rng.permutation(n)] = np.arange(n) % k
    return fold


class _Target:
    """One target's draws, aggregated per question: n1[q] draws with y = 1, n0[q] with y = 0."""

    def __init__(self, F: np.ndarray, n1: np.ndarray, n0: np.ndarray, pca: int | None):
        self.F, self.n1, self.n0, self.pca = F, n1, n0, pca

    def fit(self, qs: np.ndarray, C: float | None):
        """Fit on the questions qs (indices; those without draws are ignored); C None: the constant."""
        qs = qs[(self.n1[qs] + self.n0[qs]) > 0]
        k, n = self.n1[qs].sum(), self.n1[qs].sum() + self.n0[qs].sum()
        if C is None or not self.can_fit(qs):
            return _Constant(_smoothed(k, n))
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        steps = [("scale", StandardScaler())]
        if self.pca is not None:
            steps.append(("pca", PCA(n_components=min(self.pca, len(qs), self.F.shape[1]),
                                     svd_solver="full")))
        pre = Pipeline(steps).fit(self.F[qs])  # unsupervised: each training question once
        pos, neg = qs[self.n1[qs] > 0], qs[self.n0[qs] > 0]
        rows = np.concatenate([pos, neg])
        y = np.concatenate([np.ones(len(pos), dtype=int), np.zeros(len(neg), dtype=int)])
        w = np.concatenate([self.n1[pos], self.n0[neg]]).astype(float)
        from sklearn.exceptions import ConvergenceWarning

        clf = LogisticRegression(C=float(C), max_iter=2000)
        with warnings.catch_warnings():  # a weakly penalized fit on separable folds; CV then rejects that C
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            clf.fit(pre.transform(self.F[rows]), y, sample_weight=w)
        return _Probe(Pipeline([*pre.steps, ("logistic", clf)]))

    def can_fit(self, qs: np.ndarray) -> bool:
        qs = qs[(self.n1[qs] + self.n0[qs]) > 0]
        return len(qs) >= 2 and self.n1[qs].sum() > 0 and self.n0[qs].sum() > 0

    def losses(self, qs: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per question of qs: summed Brier, summed log loss, number of draws."""
        n1, n0 = self.n1[qs].astype(float), self.n0[qs].astype(float)
        pr = np.clip(pred, _EPS, 1 - _EPS)
        brier = n1 * (1 - pred) ** 2 + n0 * pred ** 2
        log_loss = -(n1 * np.log(pr) + n0 * np.log1p(-pr))
        return brier, log_loss, n1 + n0

    def choose_C(self, qs: np.ndarray, Cs: Sequence[float], folds: int, rng: np.random.Generator) -> float | None:
        """C with the least inner-CV (over the questions qs) draw-level log loss; None if no probe can be fit."""
        qs = qs[(self.n1[qs] + self.n0[qs]) > 0]
        if not self.can_fit(qs):
            return None
        k = min(folds, len(qs))
        fold = _assign(len(qs), k, rng)
        best, best_loss = None, math.inf
        for C in sorted(Cs):  # ascending: a tie keeps the stronger penalty
            total = 0.0
            for f in range(k):
                model = self.fit(qs[fold != f], C)
                val = qs[fold == f]
                total += self.losses(val, model.predict(self.F[val]))[1].sum()
            if total < best_loss:
                best, best_loss = float(C), total
        return best


def _interval(W: np.ndarray | None, diff: np.ndarray, n: np.ndarray) -> list[float] | None:
    if W is None:
        return None
    den = W @ n
    stats = (W @ diff) / den
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def fit_probe(X_by_question: Mapping[str, np.ndarray], samples: Mapping[str, Sequence[tuple[int, int]]], *,
              folds: int = 5, pca: int | None = None, Cs: Sequence[float] = (1e-3, 1e-2, 1e-1, 1, 10),
              seed: int = 0, bootstrap: int = 1000) -> dict:
    """Out-of-fold (over questions) regularized logistic probes of p, p1, p0; see the module docstring.

    X_by_question: {question_id: feature vector}; samples: {question_id: [(x, y), ...]} (from
    `question_samples`). Questions with labelled draws are cross-validated; a question with features
    but no labelled draw is predicted by the models fitted on all labelled questions. Returns a
    JSON-serialisable dict: folds, pca, Cs, seed, bootstrap, n_questions, n_draws, n_unlabelled,
    metrics {target: {...}} and predictions {question_id: {"p", "p0", "p1"}}."""
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise ValueError(f"probe: folds={folds!r} must be an integer of at least 2")
    folds = int(folds)
    if pca is not None and (isinstance(pca, bool) or not isinstance(pca, int | np.integer) or pca < 1):
        raise ValueError(f"probe: pca={pca!r} must be a positive number of components or None")
    Cs = [float(c) for c in Cs]
    if not Cs or any(not math.isfinite(c) or c <= 0 for c in Cs):
        raise ValueError(f"probe: Cs={Cs!r} must be a non-empty list of positive numbers")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 0:
        raise ValueError(f"probe: bootstrap={bootstrap!r} must be a non-negative integer")

    labelled = [q for q, pairs in samples.items() if len(pairs) > 0]
    missing = [q for q in labelled if q not in X_by_question]
    if missing:
        raise ValueError(f"probe: no feature vector for {len(missing)} labelled question(s), e.g. {missing[0]!r}")
    if len(labelled) < folds:
        raise ValueError(f"probe: {len(labelled)} questions have oracle labels, need at least folds={folds}")
    unlabelled = [q for q in X_by_question if q not in set(labelled)]
    ids = labelled + unlabelled
    rows = []
    for q in ids:
        v = np.asarray(X_by_question[q], dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"probe: the feature vector of question {q!r} has shape {v.shape}, expected 1-D")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"probe: the feature vector of question {q!r} has NaN or infinite values")
        rows.append(v)
    if len({len(v) for v in rows}) != 1:
        raise ValueError("probe: the feature vectors have different lengths")
    F = np.stack(rows)
    L = len(labelled)
    counts = {t: (np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=np.int64)) for t in TARGETS}
    for i, q in enumerate(labelled):
        for x, y in samples[q]:
            x, y = _binary(x, f"x of question {q!r}"), _binary(y, f"y of question {q!r}")
            for t, label, cond in (("p", x, True), ("p1", y, x == 1), ("p0", y, x == 0)):
                if cond:
                    counts[t][0 if label else 1][i] += 1

    fold = _assign(L, folds, np.random.default_rng(seed))
    lab = np.arange(L)
    predictions: dict[str, dict[str, float]] = {q: {} for q in ids}
    metrics: dict[str, dict] = {}
    for ti, t in enumerate(TARGETS):
        target = _Target(F, *counts[t], pca)
        oof = np.empty(L)
        base = np.empty(L)
        chosen: list[float | None] = []
        for f in range(folds):
            train, test = lab[fold != f], lab[fold == f]
            C = target.choose_C(train, Cs, folds, np.random.default_rng([seed, ti, f]))
            chosen.append(C)
            oof[test] = target.fit(train, C).predict(F[test])
            base[test] = target.fit(train, None).predict(F[test])
        C_all = None
        if unlabelled:
            C_all = target.choose_C(lab, Cs, folds, np.random.default_rng([seed, ti, folds]))
            rest = np.arange(L, len(ids))
            extra = target.fit(lab, C_all).predict(F[rest])
            for r, v in zip(rest, extra):
                predictions[ids[r]][t] = float(v)
        for i in range(L):
            predictions[ids[i]][t] = float(oof[i])

        has = lab[(target.n1[:L] + target.n0[:L]) > 0]
        b_probe, l_probe, n = target.losses(has, oof[has])
        b_base, l_base, _ = target.losses(has, base[has])
        total = float(n.sum())
        m: dict = {"n_questions": len(has), "n_draws": int(total),
                   "rate": float(target.n1[has].sum() / total) if total else None,
                   "C_per_fold": chosen, "C_all": C_all}
        if total == 0:
            m.update(dict.fromkeys(("brier", "brier_baseline", "brier_diff", "brier_diff_ci", "log_loss",
                                    "log_loss_baseline", "log_loss_diff", "log_loss_diff_ci")))
            m["helps"] = False
        else:
            W = None
            if bootstrap > 0:
                rng = np.random.default_rng([seed, 1000 + ti])
                W = rng.multinomial(len(has), np.full(len(has), 1.0 / len(has)), size=int(bootstrap)).astype(float)
            bci = _interval(W, b_probe - b_base, n)
            m.update({
                "brier": float(b_probe.sum() / total), "brier_baseline": float(b_base.sum() / total),
                "brier_diff": float((b_probe - b_base).sum() / total), "brier_diff_ci": bci,
                "log_loss": float(l_probe.sum() / total), "log_loss_baseline": float(l_base.sum() / total),
                "log_loss_diff": float((l_probe - l_base).sum() / total),
                "log_loss_diff_ci": _interval(W, l_probe - l_base, n),
                "helps": bool(bci is not None and bci[1] < 0),
            })
        metrics[t] = m

    return {
        "folds": folds, "pca": None if pca is None else int(pca), "Cs": Cs, "seed": int(seed),
        "bootstrap": int(bootstrap), "n_questions": L,
        "n_draws": int(sum(len(samples[q]) for q in labelled)), "n_unlabelled": len(unlabelled),
        "metrics": metrics,
        "predictions": {q: {t: predictions[q][t] for t in ("p", "p0", "p1")} for q in ids},
    }


def predicted_tp(p: float, p0: float, p1: float) -> float:
    """P(X=1 | the draw was accepted) = p·p1 / (p·p1 + (1−p)·p0); draws are i.i.d. given the question,
    so it does not depend on the draw's index N. 0/0 (nothing is ever accepted) gives p."""
    values = {"p": p, "p0": p0, "p1": p1}
    for name, v in values.items():
        if not (isinstance(v, int | float | np.integer | np.floating) and 0.0 <= float(v) <= 1.0):
            raise ValueError(f"predicted_tp: {name}={v!r} must be a probability in [0, 1]")
    p, p0, p1 = float(p), float(p0), float(p1)
    num = p * p1
    den = num + (1.0 - p) * p0
    if den <= 0.0:
        return p
    return min(1.0, max(0.0, num / den))
