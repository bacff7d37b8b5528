"""A trained judge: a logistic head on a frozen model's hidden states, fitted on oracle labels.

A cheap judge gives a 0/1 verdict (YES = the response meets the criterion) for each (question,
criterion, response). The trained judge computes P(YES) from the hidden states of a frozen causal
LM (the judges' own base model) read on the conversation `judge_text` renders, and says YES iff
P(YES) >= its threshold. It is fitted by a workflow stage on the oracle's labels of a calibration
split; this module is the library part (no Snakemake, no config dicts).

What is read (`features`, `FeatureSpec`). The conversation is [user: the question, a blank line,
"Criterion: <criterion>"; assistant: the response], rendered by the tokenizer's chat template (its
default system prompt, if any, included). The criterion comes before the response, so every
response token is read already knowing what is checked, and the features depend on the criterion:
one judge serves every criterion. For each layer of `spec.layers` (an index into `hidden_states`:
0 = the embeddings, -1 = the last layer) and each pooling of `spec.pooling`: "last" takes the state
at the conversation's last token (the end of the assistant turn), "mean" averages the states over
the ASSISTANT TURN's tokens (the response and the template's end-of-turn tokens, so the span is never
empty, even for an empty response; the prompt's tokens are left out so that a long question does not
drown the response). The blocks are concatenated layer-major: [layer0-last, layer0-mean, layer1-last,
...]. Conversations are right-padded by hand and the pad positions masked, so under the causal mask a
row is the same alone or in a batch (up to float rounding). A conversation longer than
`spec.max_tokens` keeps its LAST max_tokens tokens (the response and the criterion are at the end).

How the head is fitted (`fit`). StandardScaler -> L2-penalised LogisticRegression (scikit-learn).
The inverse penalty C is chosen by a grouped cross-validation (StratifiedGroupKFold over questions,
mean log loss; a tie keeps the stronger penalty). Out-of-fold P(YES) comes from an OUTER grouped
cross-validation with C re-chosen inside each outer training fold (nested), so every row is scored
by a model that saw neither its question nor chose its C with it: the out-of-fold predictions are
honest estimates of how the judge does on NEW questions from the same distribution. The final head
is refitted on all rows with C chosen by the same grouped CV on all rows.

What is reported (`quality`). On the out-of-fold predictions: AUC, Brier (and the Brier of the
constant prediction at the overall positive rate, and the difference), p1 = P(Y=1 | X=1),
p0 = P(Y=1 | X=0) and Cohen's kappa at the threshold, each with a 95% percentile bootstrap interval
that resamples QUESTIONS (the rows of a question are correlated, so resampling rows would give
intervals that are too narrow). When the caller passes the calibration split (the policy's random
draws), these describe the judge on random responses; a judge applied to responses a search selected
(refinements, Best-of-N winners) sees another distribution, on which it may do worse (reward hacking
is exactly that).

The threshold (`youden_threshold`). By default the one that maximises Youden's J = p1 - p0 on the
out-of-fold predictions (YES iff P(YES) >= threshold, the convention of sklearn's roc_curve), or one
the caller gives. AUC and Brier do not depend on it; p1, p0 and kappa at a threshold chosen on the
same predictions are slightly optimistic (the choice is fitted to them).

The saved format (`TrainedJudge.save` / `load`): a directory with
  judge.json  {"format": "judgeflow-trained-judge", "version": 1, "base_model": the base model's path
              AS GIVEN (the only path in the file), "text": the name of the conversation rendering,
              "features": {"layers", "pooling", "max_tokens"}, "feature_dim", "threshold",
              "threshold_rule": "youden" | "given", "C", "Cs", "training": {"n", "n_pos",
              "n_questions", "folds", "seed"}, "quality": the out-of-fold quality dict or null,
              "versions": {"numpy", "sklearn", "transformers"}}
  head.npz    float64 arrays: scaler_mean (d,), scaler_scale (d,), coef (d,), intercept (1,)
so that P(YES) = sigmoid(((h - scaler_mean) / scaler_scale) · coef + intercept). No pickle: the
files are portable across scikit-learn versions and can be read by anything. The head is not saved
as a transformers sequence-classification directory: that format's head reads the last layer at the
last token only, and a FeatureSpec may name several layers and poolings (the default: the last and
the middle layer). On the composed questions the two do equally well (out-of-fold AUC 0.900 for the
last layer alone, 0.904 for the default; benchmarks/trained_judge.py), so a caller that wants the
transformers format can use FeatureSpec(layers=(-1,), pooling=("last",)) at no measured cost.
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from judgeflow.oracle.probe import _check_layer, _n_hidden_states, hidden_state_batches

FORMAT = "judgeflow-trained-judge"
FORMAT_VERSION = 1
TEXT_FORMAT = "judge_text-v1"
POOLINGS = ("last", "mean")
DEFAULT_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


# --- the conversation ------------------------------------------------------------------------------

def judge_text(question: str, criterion: str, response: str) -> list[dict]:
    """The chat messages the features are read from: [user: the question, a blank line and
    "Criterion: <criterion>"; assistant: the response]. The criterion is in the user turn, before
    the response, so the response's tokens are read knowing what is checked, and the last token (the
    end of the assistant turn) has seen the question, the criterion and the whole response."""
    for name, value in (("question", question), ("criterion", criterion), ("response", response)):
        if not isinstance(value, str):
            raise TypeError(f"judge_text: {name} must be a string, got {type(value).__name__}")
    return [{"role": "user", "content": f"{question}\n\nCriterion: {criterion}"},
            {"role": "assistant", "content": response}]


# --- features --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureSpec:
    """Which hidden states make a row: `layers` (indices into hidden_states, 0 = embeddings, -1 =
    last), `pooling` ("last": the last token; "mean": the mean over the assistant turn's tokens) and
    `max_tokens` (longer conversations keep their last max_tokens tokens)."""

    layers: tuple[int, ...] = (-1,)
    pooling: tuple[str, ...] = ("last",)
    max_tokens: int = 1024

    def __post_init__(self):
        layers, pooling = tuple(self.layers), tuple(self.pooling)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "pooling", pooling)
        if not layers or any(isinstance(x, bool) or not isinstance(x, int | np.integer) for x in layers):
            raise ValueError(f"FeatureSpec: layers={layers!r} must be a non-empty tuple of integers")
        if len(set(layers)) != len(layers):
            raise ValueError(f"FeatureSpec: layers={layers!r} names a layer twice")
        if not pooling or len(set(pooling)) != len(pooling) or any(p not in POOLINGS for p in pooling):
            raise ValueError(f"FeatureSpec: pooling={pooling!r} must be a non-empty tuple of distinct "
                             f"values from {POOLINGS}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"FeatureSpec: max_tokens={self.max_tokens!r} must be a positive integer")

    @staticmethod
    def default(model) -> FeatureSpec:
        """The last layer and the middle one, at the last token. Measured (benchmarks/trained_judge.py,
        SmolLM2-135M-Instruct, 200 composed questions x 2 responses, out-of-fold AUC against the exact
        verifier): last layer alone 0.900, + the middle layer 0.904 (paired difference +0.004 [-0.009,
        +0.017]), + mean pooling of both layers 0.891 (-0.013 [-0.028, -0.001] against this default):
        averaging over the response did not help, so it is left out by default."""
        n_states = _n_hidden_states(model)
        if n_states is None:
            raise ValueError("FeatureSpec.default: the model's config has no num_hidden_layers")
        return FeatureSpec(layers=(-1, (n_states - 1) // 2), pooling=("last",))

    def as_dict(self) -> dict:
        return {"layers": [int(x) for x in self.layers], "pooling": list(self.pooling),
                "max_tokens": int(self.max_tokens)}

    @staticmethod
    def from_dict(d: dict) -> FeatureSpec:
        return FeatureSpec(layers=tuple(int(x) for x in d["layers"]), pooling=tuple(d["pooling"]),
                           max_tokens=int(d["max_tokens"]))


def _render(tokenizer, conversation: Sequence[dict], where: str) -> tuple[list[int], int]:
    """(token ids of the rendered conversation, index of the assistant turn's first token)."""
    if not conversation or conversation[-1].get("role") != "assistant":
        raise ValueError(f"features: {where} must end with an assistant message (the response to judge)")
    full = tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=False)
    prompt = tokenizer.apply_chat_template(list(conversation[:-1]), tokenize=False, add_generation_prompt=True)
    # the chat template writes the special tokens itself
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"features: {where} rendered to no tokens")
    start = 0  # the assistant turn starts where the tokens stop matching the prompt's
    while start < min(len(ids), len(head)) and ids[start] == head[start]:
        start += 1
    return ids, min(start, len(ids) - 1)  # never an empty span


def features(model, tokenizer, conversations: Sequence[Sequence[dict]], spec: FeatureSpec,
             batch_size: int = 8) -> np.ndarray:
    """Feature rows (float32, in input order) of chat conversations that end with the assistant's
    response: per layer of spec.layers, per pooling of spec.pooling, hidden_size values (see the
    module docstring). A layer outside the model's hidden states raises ValueError naming the range."""
    import torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"features: batch_size={batch_size!r} must be a positive integer")
    n_states = _n_hidden_states(model)
    layers = [_check_layer(x, n_states) for x in spec.layers] if n_states is not None else list(spec.layers)
    hidden = int(getattr(getattr(model, "config", None), "hidden_size", 0) or 0)
    if not conversations:
        return np.zeros((0, hidden * len(spec.layers) * len(spec.pooling)), dtype=np.float32)

    rendered = []
    for n, conv in enumerate(conversations):
        ids, start = _render(tokenizer, conv, f"conversation {n}")
        cut = max(0, len(ids) - spec.max_tokens)  # keep the last max_tokens tokens
        rendered.append((ids[cut:], max(0, start - cut)))
    out: list[np.ndarray | None] = [None] * len(rendered)
    for idx, states, mask in hidden_state_batches(model, [ids for ids, _ in rendered], batch_size):
        if n_states is None:  # no layer count in the config: check against the output
            n_states = len(states)
            layers = [_check_layer(x, n_states) for x in spec.layers]
        span = torch.zeros(mask.shape, dtype=torch.float32)  # the assistant turn
        for row, i in enumerate(idx):
            ids, start = rendered[i]
            span[row, start:len(ids)] = 1.0
        last = (mask.sum(dim=1) - 1).to(states[0].device)  # right padding: the last real token
        weights = (span / span.sum(dim=1, keepdim=True)).to(states[0].device)
        blocks = []
        for layer in layers:
            h = states[layer].float()
            for pool in spec.pooling:
                if pool == "last":
                    blocks.append(h[torch.arange(len(idx), device=h.device), last])
                else:
                    blocks.append(torch.einsum("bt,bth->bh", weights, h))
        rows = torch.cat(blocks, dim=1).cpu().numpy()
        for row, i in enumerate(idx):
            out[i] = rows[row]
    filled = [v for v in out if v is not None]
    assert len(filled) == len(out)  # the batches cover every prompt
    return np.stack(filled).astype(np.float32)


class SharedFeatures:
    """One hidden-state pass of a frozen model for every trained judge on it: the features of the union
    of their layers and poolings (one max_tokens) are computed once per conversation, and each judge
    takes its own columns (`for_spec`). A panel of J trained judges on one model thus costs one forward
    pass per (question, criterion, response), not J. Rows are kept for the most recent conversations
    (`keep`), enough for one judging chunk seen by each judge in turn."""

    def __init__(self, model, tokenizer, specs: Sequence[FeatureSpec], batch_size: int = 8, keep: int = 4096):
        if len({s.max_tokens for s in specs}) != 1:
            raise ValueError("SharedFeatures: the judges' max_tokens differ (give each max_tokens its own)")
        self.model, self.tokenizer, self.batch_size, self.keep = model, tokenizer, batch_size, keep
        self.n_states = _n_hidden_states(model)
        layers, pooling = [], []
        for s in specs:
            layers += [x for x in map(self._layer, s.layers) if x not in layers]
            pooling += [p for p in s.pooling if p not in pooling]
        self.spec = FeatureSpec(layers=tuple(layers), pooling=tuple(pooling), max_tokens=specs[0].max_tokens)
        self.hidden = int(getattr(getattr(model, "config", None), "hidden_size", 0) or 0)
        self.rows: dict[tuple, np.ndarray] = {}
        self.passes = 0  # conversations run through the model

    def _layer(self, layer: int) -> int:
        """A layer index as a non-negative one (-1 and n_states - 1 are the same hidden state)."""
        if self.n_states is None:
            return int(layer)
        return _check_layer(layer, self.n_states) % self.n_states

    def columns(self, spec: FeatureSpec) -> np.ndarray:
        """Indices of `spec`'s features (in `features`' order) within the shared rows."""
        if spec.max_tokens != self.spec.max_tokens:
            raise ValueError(f"SharedFeatures: max_tokens {spec.max_tokens} is not the shared {self.spec.max_tokens}")
        blocks = [self.spec.layers.index(self._layer(x)) * len(self.spec.pooling) + self.spec.pooling.index(p)
                  for x in spec.layers for p in spec.pooling]
        return np.concatenate([np.arange(b * self.hidden, (b + 1) * self.hidden) for b in blocks])

    def for_spec(self, keys: Sequence[tuple], conversations: Sequence[Sequence[dict]], spec: FeatureSpec) -> np.ndarray:
        """Feature rows of `spec` for the conversations (`keys` identify them: equal keys, equal text)."""
        todo = {k: c for k, c in zip(keys, conversations) if k not in self.rows}
        if todo:
            if len(self.rows) + len(todo) > self.keep:
                self.rows.clear()
                todo = dict(zip(keys, conversations))
            rows = features(self.model, self.tokenizer, list(todo.values()), self.spec, batch_size=self.batch_size)
            self.rows.update(zip(todo, rows))
            self.passes += len(todo)
        if not keys:
            return np.zeros((0, self.hidden * len(spec.layers) * len(spec.pooling)), dtype=np.float32)
        return np.stack([self.rows[k] for k in keys])[:, self.columns(spec)]


# --- fitting ---------------------------------------------------------------------------------------

@dataclass
class FitResult:
    """What `fit` returns. oof: out-of-fold P(YES) per row (from a model fitted without the row's
    question); fold: the outer fold that scored each row; inner_fold: (folds, n) the inner CV fold of
    each row within outer fold f's training part, -1 for the rows outer fold f scored; C_per_fold: C
    chosen inside each outer training fold (None: that fold had one class and predicted its smoothed
    rate); C: chosen on all rows for `pipeline`, the head refitted on all rows."""

    pipeline: Any  # the fitted sklearn Pipeline (scale -> logistic); sklearn ships no type information
    C: float
    oof: np.ndarray
    fold: np.ndarray
    inner_fold: np.ndarray
    C_per_fold: list[float | None]
    Cs: tuple[float, ...]
    folds: int
    seed: int
    n: int
    n_pos: int
    n_questions: int
    feature_dim: int = field(default=0)


def _validate(X, y, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"fit: X must be a 2-D array (rows x features), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        bad = int(np.argwhere(~np.all(np.isfinite(X), axis=1))[0, 0])
        raise ValueError(f"fit: X has NaN or infinite values (first in row {bad})")
    y_raw = np.asarray(y)
    if y_raw.shape != (len(X),):
        raise ValueError(f"fit: y has shape {y_raw.shape}, expected ({len(X)},) (one label per row of X)")
    if not np.all(np.isin(y_raw, (0, 1))):
        raise ValueError("fit: labels must be 0 or 1 (or false/true)")
    g = np.asarray(groups)
    if g.shape != (len(X),):
        raise ValueError(f"fit: groups has shape {g.shape}, expected ({len(X)},) (one question id per row)")
    return X, y_raw.astype(int), g


def _pipeline(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()),
                     ("logistic", LogisticRegression(C=C, max_iter=5000, random_state=seed))])


def _splitter(n_splits: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def grouped_splits(X, y, groups, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped, stratified (as far as the groups allow) splits; sklearn's warning that a class has
    fewer members than folds is expected with rare labels and silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*least populated class", category=UserWarning)
        return list(_splitter(n_splits, seed).split(X, y, groups))


def _choose(X, y, groups, Cs: Sequence[float], folds: int, seed: int) -> tuple[Any, float, np.ndarray]:
    """(the head refitted on all of X with the C of least grouped-CV log loss, that C, the CV fold of
    each row). The log loss of a validation fold counts both labels even where it has one class only;
    splits whose training part has one class are left out (no head can be fitted on them). Cs
    ascending, so a tie keeps the stronger penalty (GridSearchCV takes the first best)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import log_loss, make_scorer
    from sklearn.model_selection import GridSearchCV

    splits = grouped_splits(X, y, groups, min(folds, len(np.unique(groups))), seed)
    inner = np.full(len(X), -1, dtype=int)
    for k, (_, test) in enumerate(splits):
        inner[test] = k
    usable = [(tr, te) for tr, te in splits if y[tr].min() != y[tr].max()]
    if not usable:
        raise ValueError("fit: no inner cross-validation split has both labels in its training part "
                         "(too few questions of one class)")
    scorer = make_scorer(log_loss, greater_is_better=False, response_method="predict_proba", labels=[0, 1])
    search = GridSearchCV(_pipeline(1.0, seed), {"logistic__C": list(Cs)}, scoring=scorer, cv=usable,
                          refit=True, error_score="raise")
    with warnings.catch_warnings():  # weak penalties on separable folds; the CV then rejects them
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        search.fit(X, y)
    return search.best_estimator_, float(search.best_params_["logistic__C"]), inner


class _Constant:
    def __init__(self, rate: float):
        self.rate = rate

    def predict_proba(self, X):
        return np.column_stack([np.full(len(X), 1 - self.rate), np.full(len(X), self.rate)])


def fit(X, y, groups, *, seed: int, folds: int = 5, Cs: Sequence[float] = DEFAULT_CS) -> FitResult:
    """Fit the head (StandardScaler -> L2 LogisticRegression) on rows X with 0/1 labels y; `groups`
    (question ids) keep a question's rows together in every split. C is chosen by grouped CV (log
    loss); out-of-fold P(YES) comes from a nested, grouped outer CV (see the module docstring), so no
    question is in both the part that fits (or chooses C for) a model and the part it scores.

    Raises ValueError when the labels are all one class, when there are fewer questions than folds,
    or on malformed inputs. A outer training fold with one class predicts its smoothed rate
    (k + 0.5) / (n + 1) for the fold it scores."""
    X, y, g = _validate(X, y, groups)
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise ValueError(f"fit: folds={folds!r} must be an integer of at least 2")
    Cs = tuple(sorted(float(c) for c in Cs))
    if not Cs or any(not math.isfinite(c) or c <= 0 for c in Cs):
        raise ValueError(f"fit: Cs={Cs!r} must be a non-empty list of positive numbers")
    n_pos = int(y.sum())
    if n_pos in (0, len(y)):
        raise ValueError(f"fit: the labels are all one class ({len(y)} rows, all {int(y[0]) if len(y) else '-'}): "
                         "a judge needs oracle labels of both YES and NO responses")
    n_groups = len(np.unique(g))
    if n_groups < folds:
        raise ValueError(f"fit: {n_groups} question(s) (groups), fewer than folds={folds}: the grouped "
                         "cross-validation needs at least one question per fold")

    fold = np.full(len(X), -1, dtype=int)
    inner_fold = np.full((folds, len(X)), -1, dtype=int)
    oof = np.empty(len(X))
    C_per_fold: list[float | None] = []
    for f, (train, test) in enumerate(grouped_splits(X, y, g, folds, seed)):
        fold[test] = f
        yt = y[train]
        if yt.min() == yt.max() or len(np.unique(g[train])) < 2:
            model, C = _Constant((yt.sum() + 0.5) / (len(yt) + 1.0)), None
        else:
            model, C, inner = _choose(X[train], yt, g[train], Cs, folds, seed + 1 + f)
            inner_fold[f, train] = inner
        C_per_fold.append(C)
        oof[test] = model.predict_proba(X[test])[:, 1]
    pipeline, C_all, _ = _choose(X, y, g, Cs, folds, seed)
    return FitResult(pipeline=pipeline, C=C_all, oof=oof, fold=fold, inner_fold=inner_fold, C_per_fold=C_per_fold,
                     Cs=Cs, folds=int(folds), seed=int(seed), n=len(y), n_pos=n_pos, n_questions=n_groups,
                     feature_dim=X.shape[1])


# --- threshold and quality -------------------------------------------------------------------------

def youden_threshold(x_oracle, p_yes) -> float:
    """The threshold t (YES iff P(YES) >= t) that maximises Youden's J = p1 - p0 on (x, p); a tie
    keeps the highest t. Needs both classes in x."""
    from sklearn.metrics import roc_curve

    x, p = np.asarray(x_oracle).astype(int), np.asarray(p_yes, dtype=float)
    if x.min() == x.max():
        raise ValueError("youden_threshold: the oracle labels are all one class; p1 or p0 is undefined")
    fpr, tpr, thresholds = roc_curve(x, p)
    finite = np.isfinite(thresholds)  # the first threshold (inf) says NO to everything
    j = np.where(finite, tpr - fpr, -np.inf)
    best = np.flatnonzero(j >= j.max() - 1e-12)  # ties up to rounding (1 - 1/3 vs 2/3 - 0)
    return float(thresholds[best[0]])  # roc_curve's thresholds decrease: the highest of the ties


def _metrics(x: np.ndarray, p: np.ndarray, yes: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """Weighted metrics (w: how often each row is in the sample; NaN where undefined)."""
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    nan = float("nan")
    total = w.sum()
    w1, w0 = w * (x == 1), w * (x == 0)
    rate = (w1.sum() / total) if total else nan
    brier = float(np.sum(w * (p - x) ** 2) / total)
    brier_const = float(np.sum(w * (rate - x) ** 2) / total)
    both = w1.sum() > 0 and w0.sum() > 0
    out = {
        "auc": float(roc_auc_score(x, p, sample_weight=w)) if both else nan,
        "brier": brier, "brier_constant": brier_const, "brier_diff": brier - brier_const,
        "p1": float(np.sum(w1 * yes) / w1.sum()) if w1.sum() else nan,
        "p0": float(np.sum(w0 * yes) / w0.sum()) if w0.sum() else nan,
        "kappa": nan,
    }
    keep = w > 0
    if len(np.unique(x[keep])) > 1 or len(np.unique(yes[keep])) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            out["kappa"] = float(cohen_kappa_score(x[keep], yes[keep], sample_weight=w[keep]))
    return out


METRICS = ("auc", "brier", "brier_constant", "brier_diff", "p1", "p0", "kappa")


def _metrics_many(x: np.ndarray, p: np.ndarray, yes: np.ndarray, W: np.ndarray) -> np.ndarray:
    """`_metrics` for many weight vectors at once (W: (B, n)) -> (B, len(METRICS)), NaN where undefined:
    the same formulas (weighted Mann-Whitney AUC with ties counted half, weighted Cohen's kappa), in
    array operations, so that a 1000-sample bootstrap costs milliseconds (tests check it against `_metrics`)."""
    W = np.asarray(W, dtype=float)
    x1, x0 = (x == 1).astype(float), (x == 0).astype(float)
    total = W.sum(axis=1)
    n1, n0 = W @ x1, W @ x0
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = n1 / total
        brier = (W @ (p - x) ** 2) / total
        brier_const = (n1 * (1 - rate) ** 2 + n0 * rate ** 2) / total
        # AUC: positives above negatives, ties half, over the distinct scores in increasing order
        _, level = np.unique(p, return_inverse=True)
        levels = level.max() + 1
        pos = np.zeros((len(W), levels))
        neg = np.zeros((len(W), levels))
        np.add.at(pos.T, level, (W * x1).T)
        np.add.at(neg.T, level, (W * x0).T)
        below = np.cumsum(neg, axis=1) - neg
        auc = np.sum(pos * (below + 0.5 * neg), axis=1) / (n1 * n0)
        auc[(n1 == 0) | (n0 == 0)] = np.nan
        p1 = (W @ (x1 * yes)) / n1
        p0 = (W @ (x0 * yes)) / n0
        said = (W @ yes) / total
        agree = (W @ (x == yes).astype(float)) / total
        chance = rate * said + (1 - rate) * (1 - said)
        kappa = (agree - chance) / (1 - chance)
    kept = W > 0  # kappa is left undefined where both x and yes are one class among the rows drawn
    varied = ((kept & (x == 1)).any(axis=1) & (kept & (x == 0)).any(axis=1)) | (
        (kept & (yes == 1)).any(axis=1) & (kept & (yes == 0)).any(axis=1))
    kappa = np.where(varied & np.isfinite(kappa), kappa, np.nan)
    return np.column_stack([auc, brier, brier_const, brier - brier_const, p1, p0, kappa])


def quality(x_oracle, p_yes, groups, threshold: float, *, seed: int, n_boot: int = 1000, yes=None) -> dict:
    """How well P(YES) predicts the oracle's 0/1 label x: AUC, Brier, Brier of the constant at the
    overall rate (brier_constant; in-sample, which favours the constant) and brier_diff = brier -
    brier_constant, and at `threshold` (YES iff p >= threshold) p1 = P(YES | x=1), p0 = P(YES | x=0)
    and Cohen's kappa. Each has "<name>_ci": a 95% percentile interval from `n_boot` bootstrap samples
    of QUESTIONS (groups, with replacement; all rows of a drawn question come along), since a
    question's rows are correlated; replicates where a metric is undefined (one class) are left out
    of its interval. Undefined estimates are None. Also: n, n_questions, n_pos, threshold, n_boot,
    seed. Pass out-of-fold predictions (FitResult.oof) to estimate the judge on new questions; on the
    calibration split these describe the judge on random (not judge-selected) responses. `yes`: the
    verdicts (0/1) when they are not P(YES) >= threshold (a prompt judge's sampled answer, a k-of-J
    vote); p1, p0 and kappa are then those of `yes`, AUC and Brier those of p_yes."""
    x = np.asarray(x_oracle)
    p = np.asarray(p_yes, dtype=float)
    g = np.asarray(groups)
    if x.ndim != 1 or p.shape != x.shape or g.shape != x.shape:
        raise ValueError(f"quality: x_oracle, p_yes and groups must be 1-D of one length, got shapes "
                         f"{x.shape}, {p.shape}, {g.shape}")
    if len(x) == 0:
        raise ValueError("quality: no rows")
    if not np.all(np.isin(x, (0, 1))):
        raise ValueError("quality: x_oracle must be 0 or 1")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError("quality: p_yes must be probabilities in [0, 1]")
    if not math.isfinite(float(threshold)):
        raise ValueError(f"quality: threshold={threshold!r} must be a finite number")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise ValueError(f"quality: n_boot={n_boot!r} must be a non-negative integer")
    x = x.astype(int)
    yes = (p >= threshold).astype(int) if yes is None else np.asarray(yes).astype(int)
    if yes.shape != x.shape:
        raise ValueError(f"quality: yes has shape {yes.shape}, x_oracle {x.shape}")
    names, member = np.unique(g, return_inverse=True)
    point = _metrics(x, p, yes, np.ones(len(x)))
    out: dict = {"n": len(x), "n_questions": len(names), "n_pos": int(x.sum()), "threshold": float(threshold),
                 "n_boot": int(n_boot), "seed": int(seed)}
    reps = np.full((n_boot, len(METRICS)), np.nan)
    if n_boot:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_boot)
        reps = _metrics_many(x, p, yes, counts[:, member])
    for j, k in enumerate(METRICS):
        out[k] = None if math.isnan(point[k]) else point[k]
        vals = reps[:, j][~np.isnan(reps[:, j])]
        out[f"{k}_ci"] = [float(v) for v in np.percentile(vals, [2.5, 97.5])] if len(vals) else None
    return out


# --- the saved judge -------------------------------------------------------------------------------

def _versions() -> dict:
    import sklearn

    try:
        import transformers
        tv = transformers.__version__
    except ImportError:  # reading a judge needs no transformers
        tv = None
    return {"numpy": np.__version__, "sklearn": sklearn.__version__, "transformers": tv}


@dataclass
class TrainedJudge:
    """A fitted head on `base_model`'s features; P(YES) = sigmoid(((h - mean) / scale) · coef + b)."""

    base_model: str
    spec: FeatureSpec
    threshold: float
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    C: float
    info: dict = field(default_factory=dict)  # threshold_rule, Cs, training, quality, versions

    @staticmethod
    def from_fit(result: FitResult, base_model: str, spec: FeatureSpec, threshold: float, *,
                 threshold_rule: str = "given", quality: dict | None = None) -> TrainedJudge:
        """The judge of a fit with `threshold` (e.g. youden_threshold(y, result.oof); `train` does that)."""
        threshold = float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"TrainedJudge: threshold={threshold} must be in [0, 1]")
        scaler = result.pipeline.named_steps["scale"]
        clf = result.pipeline.named_steps["logistic"]
        info = {"threshold_rule": threshold_rule, "Cs": list(result.Cs),
                "training": {"n": result.n, "n_pos": result.n_pos, "n_questions": result.n_questions,
                             "folds": result.folds, "seed": result.seed},
                "quality": quality, "versions": _versions()}
        return TrainedJudge(base_model=str(base_model), spec=spec, threshold=threshold,
                            mean=np.asarray(scaler.mean_, dtype=np.float64),
                            scale=np.asarray(scaler.scale_, dtype=np.float64),
                            coef=np.asarray(clf.coef_[0], dtype=np.float64),
                            intercept=float(clf.intercept_[0]), C=float(result.C), info=info)

    def p_from_features(self, X) -> np.ndarray:
        """P(YES) of feature rows (as `features` computes them with self.spec)."""
        from scipy.special import expit

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.coef):
            raise ValueError(f"TrainedJudge: feature rows of shape {X.shape} do not fit the head's "
                             f"{len(self.coef)} features (was the judge trained on another base model?)")
        return expit(((X - self.mean) / self.scale) @ self.coef + self.intercept)

    def p_yes(self, model, tokenizer, conversations: Sequence[Sequence[dict]], batch_size: int = 8) -> np.ndarray:
        """P(YES) of each conversation (judge_text(...)), read with `model` (the base model)."""
        return self.p_from_features(features(model, tokenizer, conversations, self.spec, batch_size=batch_size))

    def verdicts(self, p_yes) -> np.ndarray:
        """1 (YES) where P(YES) >= threshold, else 0."""
        return (np.asarray(p_yes, dtype=float) >= self.threshold).astype(int)

    def save(self, directory: str | Path) -> Path:
        """Write judge.json and head.npz into `directory` (created if missing)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "base_model": self.base_model, "text": TEXT_FORMAT,
                "features": self.spec.as_dict(), "feature_dim": len(self.coef), "threshold": self.threshold,
                "C": self.C, **self.info}
        np.savez(d / "head.npz", scaler_mean=self.mean, scaler_scale=self.scale, coef=self.coef,
                 intercept=np.array([self.intercept]))
        (d / "judge.json").write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return d

    @staticmethod
    def load(directory: str | Path) -> TrainedJudge:
        """Read a judge `save` wrote; ValueError naming the file when it is not one."""
        d = Path(directory)
        path = d / "judge.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path}: no trained judge here (judge.json missing)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}, expected "
                             f"{FORMAT!r} version {FORMAT_VERSION}")
        if meta.get("text") != TEXT_FORMAT:
            raise ValueError(f"{path}: trained on conversations rendered as {meta.get('text')!r}, this "
                             f"judgeflow renders {TEXT_FORMAT!r}")
        with np.load(d / "head.npz", allow_pickle=False) as head:
            arrays = {k: np.asarray(head[k], dtype=np.float64) for k in
                      ("scaler_mean", "scaler_scale", "coef", "intercept")}
        dim = int(meta["feature_dim"])
        if any(arrays[k].shape != (dim,) for k in ("scaler_mean", "scaler_scale", "coef")) \
                or arrays["intercept"].shape != (1,):
            raise ValueError(f"{d / 'head.npz'}: array shapes do not match feature_dim={dim}")
        info = {k: meta.get(k) for k in ("threshold_rule", "Cs", "training", "quality", "versions")}
        return TrainedJudge(base_model=meta["base_model"], spec=FeatureSpec.from_dict(meta["features"]),
                            threshold=float(meta["threshold"]), mean=arrays["scaler_mean"],
                            scale=arrays["scaler_scale"], coef=arrays["coef"],
                            intercept=float(arrays["intercept"][0]), C=float(meta["C"]), info=info)


def train(X, y, groups, base_model: str, spec: FeatureSpec, *, seed: int, folds: int = 5,
          Cs: Sequence[float] = DEFAULT_CS, threshold: float | None = None,
          n_boot: int = 1000) -> tuple[TrainedJudge, FitResult, dict]:
    """fit + the threshold (Youden's J on the out-of-fold P(YES), or the given one) + the out-of-fold
    quality at it: (the judge, the fit, the quality dict). The quality is stored in the judge too."""
    result = fit(X, y, groups, seed=seed, folds=folds, Cs=Cs)
    y = np.asarray(y).astype(int)
    rule = "given"
    if threshold is None:
        threshold, rule = youden_threshold(y, result.oof), "youden"
    q = quality(y, result.oof, groups, threshold, seed=seed, n_boot=n_boot)
    judge = TrainedJudge.from_fit(result, base_model, spec, threshold, threshold_rule=rule, quality=q)
    return judge, result, q


__all__ = ["FeatureSpec", "FitResult", "SharedFeatures", "TrainedJudge", "features", "fit", "judge_text", "quality",
           "train", "youden_threshold"]
