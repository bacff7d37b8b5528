"""The trained judge (judgeflow.judging.trained): features of the real embedded model, the nested grouped
fit on real labelled responses (composed questions, responses sampled by the embedded policy, labels
from the exact verifier), save/load, and quality() on examples with a known answer."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from judgeflow.judging.trained import (
    FeatureSpec,
    SharedFeatures,
    TrainedJudge,
    features,
    fit,
    judge_text,
    quality,
    train,
    youden_threshold,
)

from conftest import ROOT

N_QUESTIONS, N_RESPONSES = 48, 2


def _conversations():
    return [
        judge_text("What is 2 + 2?", "The answer is a single number.", "4"),
        judge_text("Describe a cat to someone who has never seen one. Answer with at most 50 words.",
                   "Answer with at most 50 words.",
                   "A cat is a small, furry animal with pointed ears, whiskers and a long tail. It purrs."),
        judge_text("Name a colour.", "Your entire response should be in lowercase letters.", ""),
    ]


# --- features --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_row_is_the_same_alone_and_in_a_padded_batch(hf_model):
    model, tok = hf_model.model, hf_model.tokenizer
    spec = FeatureSpec(layers=(-1, 15), pooling=("last", "mean"))
    convs = _conversations()
    batch = features(model, tok, convs, spec, batch_size=8)
    hidden = model.config.hidden_size
    assert batch.shape == (3, 4 * hidden) and batch.dtype == np.float32 and np.all(np.isfinite(batch))
    lengths = {len(tok(tok.apply_chat_template(c, tokenize=False))["input_ids"]) for c in convs}
    assert len(lengths) == 3  # three lengths: the shorter rows are padded in the batch
    for i, conv in enumerate(convs):
        alone = features(model, tok, [conv], spec, batch_size=1)
        np.testing.assert_allclose(alone[0], batch[i], rtol=0, atol=1e-4)
    assert not np.allclose(batch[0], batch[1], atol=1e-2)
    # the blocks are layer-major: [last layer: last, mean | layer 15: last, mean]
    only_mean_15 = features(model, tok, convs, FeatureSpec(layers=(15,), pooling=("mean",)))
    np.testing.assert_allclose(only_mean_15, batch[:, 3 * hidden:], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_judges_on_one_model_share_one_hidden_state_pass(hf_model):
    """A panel of trained judges on one model: one pass per conversation, and each judge's columns are
    exactly its own features (layer -1 and layer 30 of the 31 hidden states are the same state)."""
    model, tok = hf_model.model, hf_model.tokenizer
    n = model.config.num_hidden_layers + 1
    specs = [FeatureSpec(layers=(-1,)), FeatureSpec(layers=(n - 1, 15), pooling=("last", "mean")),
             FeatureSpec(layers=(15,), pooling=("mean",))]
    shared = SharedFeatures(model, tok, specs, batch_size=8)
    assert shared.spec.layers == (n - 1, 15) and shared.spec.pooling == ("last", "mean")
    convs = _conversations()
    keys = [("q", str(i)) for i in range(len(convs))]
    for spec in specs:
        np.testing.assert_allclose(shared.for_spec(keys, convs, spec), features(model, tok, convs, spec),
                                   rtol=0, atol=1e-4)
    assert shared.passes == len(convs)  # three judges, one pass each conversation
    shared.for_spec(keys[:1], convs[:1], specs[0])
    assert shared.passes == len(convs)
    with pytest.raises(ValueError, match="max_tokens"):
        SharedFeatures(model, tok, [FeatureSpec(max_tokens=64), FeatureSpec(max_tokens=128)])


@pytest.mark.slow
def test_mean_pooling_reads_the_assistant_turn_and_the_criterion_matters(hf_model):
    """Layer 0 (the embeddings) has no context: its mean over the assistant turn depends on the
    response only, so two questions with one response give the same row, and another response not."""
    model, tok = hf_model.model, hf_model.tokenizer
    emb = FeatureSpec(layers=(0,), pooling=("mean", "last"))
    a = judge_text("Name a fruit.", "Answer in one word.", "banana")
    b = judge_text("Which fruit is yellow and long? Think about it.", "Use lowercase letters only.", "banana")
    c = judge_text("Name a fruit.", "Answer in one word.", "apple pie")
    rows = features(model, tok, [a, b, c], emb)
    np.testing.assert_allclose(rows[0], rows[1], rtol=0, atol=1e-6)
    assert not np.allclose(rows[0], rows[2], atol=1e-3)
    # in the last layer the criterion changes the row: one judge serves every criterion
    other = judge_text("Name a fruit.", "Use lowercase letters only.", "banana")
    last = features(model, tok, [a, other], FeatureSpec())
    assert not np.allclose(last[0], last[1], atol=1e-2)


@pytest.mark.slow
def test_max_tokens_keeps_the_end_of_the_conversation(hf_model):
    """Cutting the prompt's beginning keeps the response (layer 0's mean over it is unchanged) but
    removes context (the last layer's row changes); a row of max_tokens = the full length is unchanged."""
    model, tok = hf_model.model, hf_model.tokenizer
    conv = judge_text("Describe a cat to someone who has never seen one, in detail and with examples.",
                      "Answer with at most 50 words.", "A cat is a small furry animal.")
    n = len(tok(tok.apply_chat_template(conv, tokenize=False))["input_ids"])
    spec = FeatureSpec(layers=(0, -1), pooling=("mean",), max_tokens=n)
    cut = FeatureSpec(layers=(0, -1), pooling=("mean",), max_tokens=16)  # the assistant turn is shorter
    full, short = features(model, tok, [conv], spec), features(model, tok, [conv], cut)
    np.testing.assert_allclose(full, features(model, tok, [conv], FeatureSpec(layers=(0, -1), pooling=("mean",))),
                               rtol=0, atol=1e-6)
    h = model.config.hidden_size
    np.testing.assert_allclose(short[:, :h], full[:, :h], rtol=0, atol=1e-6)
    assert not np.allclose(short[:, h:], full[:, h:], atol=1e-2)


@pytest.mark.slow
def test_a_layer_out_of_range_names_the_range(hf_model):
    n_states = hf_model.model.config.num_hidden_layers + 1
    for bad in (n_states, -n_states - 1):
        with pytest.raises(ValueError, match=rf"layer={bad}.*{n_states} hidden states.*{-n_states}\.\.{n_states - 1}"):
            features(hf_model.model, hf_model.tokenizer, _conversations()[:1], FeatureSpec(layers=(-1, bad)))


def test_feature_spec_and_conversation_checks():
    with pytest.raises(ValueError, match="pooling"):
        FeatureSpec(pooling=("max",))
    with pytest.raises(ValueError, match="layers"):
        FeatureSpec(layers=())
    with pytest.raises(ValueError, match="max_tokens"):
        FeatureSpec(max_tokens=0)
    assert FeatureSpec.from_dict(FeatureSpec(layers=(-1, 15), pooling=("last", "mean")).as_dict()) == \
        FeatureSpec(layers=(-1, 15), pooling=("last", "mean"))
    msgs = judge_text("Q?", "Be brief.", "Yes.")
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[0]["content"].endswith("Criterion: Be brief.") and msgs[1]["content"] == "Yes."


# --- fit and quality on real labelled responses ----------------------------------------------------

@pytest.fixture(scope="module")
def labelled(hf_model):
    """Composed questions with the demo's instructions (one each), N_RESPONSES sampled responses each
    (the demo's sampling: 32 tokens, temperature 0.8), the exact verifier's label of each, the features."""
    from labelled import labelled_responses

    rows = labelled_responses(hf_model, N_QUESTIONS, N_RESPONSES)
    convs = [judge_text(r["prompt"], r["criterion"], r["response"]) for r in rows]
    y = [r["x"] for r in rows]
    groups = [r["question_id"] for r in rows]
    spec = FeatureSpec.default(hf_model.model)
    X = features(hf_model.model, hf_model.tokenizer, convs, spec, batch_size=16)
    return {"X": X, "y": np.array(y), "groups": np.array(groups), "convs": convs, "spec": spec}


@pytest.fixture(scope="module")
def trained(labelled):
    d = labelled
    return train(d["X"], d["y"], d["groups"], "resources/models/SmolLM2-135M-Instruct", d["spec"], seed=0,
                 n_boot=1000)


@pytest.mark.slow
def test_the_trained_judge_beats_a_constant_on_held_out_questions(labelled, trained):
    judge, result, q = trained
    y = labelled["y"]
    assert 0 < y.sum() < len(y)  # both classes in the real labels
    assert q["n"] == N_QUESTIONS * N_RESPONSES and q["n_questions"] == N_QUESTIONS and q["n_pos"] == y.sum()
    # out of fold: every row scored by a model that never saw its question
    assert q["auc"] > 0.5
    lo, hi = q["auc_ci"]
    assert 0.5 < lo <= q["auc"] <= hi
    assert q["brier"] < q["brier_constant"]
    assert q["threshold"] == judge.threshold == youden_threshold(y, result.oof)
    assert q["p1"] > q["p0"]  # Youden's J > 0 at the chosen threshold
    assert judge.info["threshold_rule"] == "youden" and judge.info["quality"] == q


@pytest.mark.slow
def test_no_question_is_in_both_the_inner_folds_and_the_scored_outer_fold(labelled, trained):
    _, result, _ = trained
    g = labelled["groups"]
    assert set(np.unique(result.fold)) == set(range(result.folds))
    for q in np.unique(g):  # a question's rows share one outer fold
        assert len(set(result.fold[g == q])) == 1
    for f in range(result.folds):
        scored = result.fold == f
        inner = result.inner_fold[f]
        if result.C_per_fold[f] is None:  # a one-class training fold fits no head, so no inner CV
            continue
        assert np.array_equal(inner == -1, scored)  # the inner CV runs on the training part only, all of it
        assert not set(g[scored]) & set(g[~scored])
        for q in np.unique(g[~scored]):
            assert len(set(inner[g == q])) == 1  # inner folds keep questions together too
        assert result.C_per_fold[f] in result.Cs
    assert result.C in result.Cs and result.n == len(g) and result.n_questions == N_QUESTIONS


@pytest.mark.slow
def test_save_and_load_give_the_same_p_yes(hf_model, labelled, trained, model_dir, tmp_path):
    judge, result, _ = trained
    X = labelled["X"]
    X64 = X.astype(np.float64)  # fit works in float64; sklearn would keep float32 input in float32
    np.testing.assert_allclose(judge.p_from_features(X), result.pipeline.predict_proba(X64)[:, 1], rtol=0,
                               atol=1e-9)
    judge.save(tmp_path / "judge")
    loaded = TrainedJudge.load(tmp_path / "judge")
    assert loaded.spec == judge.spec and loaded.threshold == judge.threshold and loaded.C == judge.C
    convs = labelled["convs"][:6]
    before = judge.p_yes(hf_model.model, hf_model.tokenizer, convs)
    after = loaded.p_yes(hf_model.model, hf_model.tokenizer, convs)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(loaded.p_from_features(X), result.pipeline.predict_proba(X64)[:, 1], rtol=0,
                               atol=1e-9)
    np.testing.assert_array_equal(loaded.verdicts(after), (after >= judge.threshold).astype(int))
    assert sorted(p.name for p in (tmp_path / "judge").iterdir()) == ["head.npz", "judge.json"]

    # the only path in judge.json is the base model's, as given (relative stays relative)
    def strings(obj):
        if isinstance(obj, dict):
            for v in obj.values():
                yield from strings(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from strings(v)
        elif isinstance(obj, str):
            yield obj

    meta = json.loads((tmp_path / "judge" / "judge.json").read_text())
    assert meta["base_model"] == "resources/models/SmolLM2-135M-Instruct"
    assert not [s for s in strings(meta) if s.startswith("/") or str(tmp_path) in s or str(ROOT) in s]
    absolute = dataclasses.replace(judge, base_model=str(model_dir))
    absolute.save(tmp_path / "abs")
    meta = json.loads((tmp_path / "abs" / "judge.json").read_text())
    assert [s for s in strings(meta) if s.startswith("/")] == [str(model_dir)]
    assert meta["features"] == {"layers": [-1, 15], "pooling": ["last"], "max_tokens": 1024}  # the default
    assert meta["feature_dim"] == X.shape[1] and meta["training"]["n_questions"] == N_QUESTIONS


def test_loading_something_else_says_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match=r"judge\.json missing"):
        TrainedJudge.load(tmp_path)
    (tmp_path / "judge.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="format 'other'"):
        TrainedJudge.load(tmp_path)


# --- fit's errors and folds, on synthetic features --------------------------------------------------

def _synthetic(n_questions=30, per=3, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"q{i}" for i in range(n_questions)], per)
    X = rng.normal(size=(len(groups), dim))
    y = (X[:, 0] + 0.5 * rng.normal(size=len(groups)) > 0).astype(int)
    return X, y, groups


def test_labels_of_one_class_raise():
    X, _, groups = _synthetic()
    for label in (0, 1):
        with pytest.raises(ValueError, match="all one class"):
            fit(X, np.full(len(X), label), groups, seed=0)


def test_fewer_questions_than_folds_raise_with_the_numbers():
    X, y, groups = _synthetic(n_questions=4)
    with pytest.raises(ValueError, match=r"4 question\(s\).*fewer than folds=5"):
        fit(X, y, groups, seed=0, folds=5)


def test_a_rare_label_in_one_question_still_fits():
    """Positives in one question only: the outer fold that scores it trains on negatives only and
    predicts its smoothed rate; the other folds drop the inner split that would train on one class."""
    X, _, groups = _synthetic(n_questions=20, per=2)
    y = (groups == "q7").astype(int)
    res = fit(X, y, groups, seed=0)
    f = int(res.fold[groups == "q7"][0])
    assert res.C_per_fold[f] is None and all(c in res.Cs for i, c in enumerate(res.C_per_fold) if i != f)
    n_train = int(np.sum(res.fold != f))
    np.testing.assert_allclose(res.oof[res.fold == f], 0.5 / (n_train + 1))
    assert np.all(res.inner_fold[f] == -1) and np.all((res.oof > 0.0) & (res.oof < 1.0))


def test_synthetic_fit_is_seeded_and_grouped():
    X, y, groups = _synthetic()
    a, b = fit(X, y, groups, seed=3), fit(X, y, groups, seed=3)
    np.testing.assert_array_equal(a.oof, b.oof)
    np.testing.assert_array_equal(a.fold, b.fold)
    for q in np.unique(groups):
        assert len(set(a.fold[groups == q])) == 1
    q = quality(y, a.oof, groups, 0.5, seed=0, n_boot=200)
    assert q["auc"] > 0.8 and q["auc_ci"][0] > 0.5


# --- quality on examples with a known answer --------------------------------------------------------

def test_perfect_predictions():
    x = np.array([1, 0, 1, 0, 1, 1, 0, 0, 1, 0] * 3)
    groups = np.repeat(np.arange(15), 2)
    q = quality(x, x.astype(float), groups, 0.5, seed=0, n_boot=300)
    assert q["auc"] == 1 and q["p1"] == 1 and q["p0"] == 0 and q["kappa"] == pytest.approx(1) and q["brier"] == 0
    for k in ("auc", "p1", "p0", "kappa", "brier"):
        lo, hi = q[f"{k}_ci"]
        assert lo - 1e-12 <= q[k] <= hi + 1e-12
    assert q["n"] == 30 and q["n_questions"] == 15 and q["n_pos"] == 15 and q["threshold"] == 0.5


def test_known_rates_and_no_spread_when_every_question_is_the_same():
    # 20 identical questions of 4 rows: x = 1, 1, 0, 0; at 0.5 the judge says YES to the first three
    x = np.tile([1, 1, 0, 0], 20)
    p = np.tile([0.9, 0.6, 0.7, 0.1], 20)
    groups = np.repeat(np.arange(20), 4)
    q = quality(x, p, groups, 0.5, seed=1, n_boot=500)
    assert q["p1"] == 1.0 and q["p0"] == 0.5
    assert q["kappa"] == pytest.approx(0.5)  # agreement 3/4, chance 1/2
    assert q["auc"] == pytest.approx(0.75)  # 0.9 beats both negatives, 0.6 beats 0.1 only: 3 of 4 pairs
    assert q["brier"] == pytest.approx(np.mean((p - x) ** 2)) and q["brier_constant"] == pytest.approx(0.25)
    for k in ("auc", "p1", "p0", "kappa", "brier", "brier_diff"):
        assert q[f"{k}_ci"] == pytest.approx([q[k], q[k]], abs=1e-12)  # a resample of equal questions is equal


def test_the_bootstrap_resamples_questions_not_rows():
    """Repeating every row of a question changes no question-level resample: the same intervals. A
    bootstrap over rows would narrow them as if the copies were independent evidence."""
    rng = np.random.default_rng(0)
    groups = np.arange(40)
    x = rng.integers(0, 2, size=40)
    p = 0.3 * x + 0.7 * rng.random(40)  # informative, not separating
    once = quality(x, p, groups, 0.5, seed=7, n_boot=400)
    four = quality(np.repeat(x, 4), np.repeat(p, 4), np.repeat(groups, 4), 0.5, seed=7, n_boot=400)
    for k in ("auc", "brier", "p1", "p0", "kappa"):
        assert four[k] == pytest.approx(once[k])
        np.testing.assert_allclose(four[f"{k}_ci"], once[f"{k}_ci"], atol=1e-12)
        lo, hi = once[f"{k}_ci"]
        assert lo < once[k] < hi  # a real spread, around the estimate
    assert four["n"] == 160 and four["n_questions"] == 40


def test_youden_threshold_and_input_checks():
    x = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.3, 0.35, 0.8, 0.4, 0.9])
    t = youden_threshold(x, p)
    assert t == 0.8  # J = p1 - p0 = 2/3 - 0 at 0.8 and 1 - 1/3 at 0.35: a tie keeps the higher threshold
    with pytest.raises(ValueError, match="one class"):
        youden_threshold(np.ones(4), np.linspace(0, 1, 4))
    with pytest.raises(ValueError, match="probabilities"):
        quality(x, p + 1, np.arange(6), 0.5, seed=0)
    assert quality(np.ones(4, dtype=int), np.full(4, 0.7), np.arange(4), 0.5, seed=0, n_boot=50)["auc"] is None


def test_a_judge_loads_without_transformers_objects(tmp_path):
    """Round trip of the head alone: the same P(YES) from features, to 1e-12."""
    X, y, groups = _synthetic()
    res = fit(X, y, groups, seed=0)
    spec = FeatureSpec()
    judge = TrainedJudge.from_fit(res, "some/model", spec, 0.5)
    loaded = TrainedJudge.load(judge.save(tmp_path / "j"))
    np.testing.assert_allclose(loaded.p_from_features(X), res.pipeline.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="do not fit the head's 8 features"):
        loaded.p_from_features(X[:, :5])
    assert Path(tmp_path / "j" / "head.npz").exists()


def test_the_bootstrap_metrics_in_arrays_equal_the_sklearn_ones():
    """_metrics_many (every bootstrap sample at once) against _metrics (sklearn, one sample), with ties
    in P(YES), zero weights, and samples of one class."""
    from judgeflow.judging.trained import METRICS, _metrics, _metrics_many

    rng = np.random.default_rng(3)
    n = 40
    x = rng.integers(0, 2, n)
    p = np.round(rng.random(n), 1)  # ties
    yes = (p >= 0.5).astype(int)
    W = rng.multinomial(n, np.full(n, 1 / n), size=50).astype(float)
    W[0] = x  # positives only: AUC, p0 undefined
    W[1] = 1 - x
    many = _metrics_many(x, p, yes, W)
    for b in range(len(W)):
        one = _metrics(x, p, yes, W[b])
        np.testing.assert_allclose(many[b], [one[k] for k in METRICS], rtol=1e-9, atol=1e-12, equal_nan=True)
