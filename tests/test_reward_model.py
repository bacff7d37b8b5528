"""The reward_model judge backend on a real sequence-classification model built from the embedded SmolLM2."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from judgeflow.errors import ConfigError
from judgeflow.models.reward_model import Calibration, RewardModel, check_seq_cls_dir, conversation, p_yes

QUESTIONS = [
    ("Name a colour.", "Answer in one word.", "Blue."),
    ("Write a haiku about the sea.", "Use exactly three lines.",
     "Waves fold into foam\nthe tide keeps its patient count\nsalt on the north wind"),
    ("What is 2 + 2?", "Give only the number.", "4"),
    ("Describe a cat in detail.", "Mention its tail.",
     "The cat is a small grey tabby with green eyes, soft fur, white paws, and a long striped tail that "
     "curls around its feet when it sleeps in the afternoon sun by the kitchen window."),
    ("Say hello.", "Be polite.", "Hello, it is nice to meet you!"),
    ("List three fruits.", "Use a bulleted list.", "- apple\n- pear\n- plum"),
    ("Explain gravity to a child.", "Use fewer than 30 words.",
     "Gravity is an invisible pull that makes things fall down and keeps us on the ground."),
]


def _build(model_dir, out, num_labels: int, **config_overrides):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1234)  # the score head is initialised at random
    m = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=num_labels,
                                                           dtype=torch.float32, **config_overrides)
    m.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(out))
    del m
    return out


@pytest.fixture(scope="module")
def rm_dir(model_dir, tmp_path_factory):
    """The whole embedded SmolLM2 (30 layers) with a random 1-label head."""
    return _build(model_dir, tmp_path_factory.mktemp("rm1"), num_labels=1)


@pytest.fixture(scope="module")
def rm(rm_dir):
    m = RewardModel("rm", str(rm_dir), device="cpu", dtype="float32", batch_size=16, threads=2)
    yield m
    m.close()


@pytest.fixture(scope="module")
def rm2_dir(model_dir, tmp_path_factory):
    """SmolLM2's first 2 layers (its own weights, the rest dropped) with a random 2-label head: the same
    code path at a fifteenth of the compute, for the tests that score many batches."""
    return _build(model_dir, tmp_path_factory.mktemp("rm2"), num_labels=2, num_hidden_layers=2)


def _convs():
    return [conversation(q, c, r) for q, c, r in QUESTIONS]


def test_built_dir_is_sequence_classification(rm_dir):
    cfg = json.loads((rm_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"]
    assert check_seq_cls_dir(str(rm_dir), "k").num_labels == 1


def test_conversation_turns():
    conv = conversation("Q?", "be brief", "A.")
    assert [m["role"] for m in conv] == ["user", "assistant"]
    assert "Q?" in conv[0]["content"] and "be brief" in conv[0]["content"]
    assert conv[1]["content"] == "A."


def test_score_same_alone_and_in_a_padded_batch(rm):
    convs = [_convs()[i] for i in (0, 3, 1)]  # 48, 90 and 68 tokens
    ids = [rm.tokenizer(rm.render(c), add_special_tokens=False)["input_ids"] for c in convs]
    assert max(map(len, ids)) - min(map(len, ids)) > 20  # the batch really pads
    batched = rm.score(convs)  # one batch, right-padded to the longest
    alone = [rm.score([c])[0] for c in convs]
    np.testing.assert_allclose(batched, alone, atol=1e-4, rtol=0)
    assert np.std(alone) > 1e-3  # a random head still tells the conversations apart
    # the score is the head at the last real token of the unpadded conversation
    last = torch.tensor([ids[0]])
    assert last[0, -1].item() != rm.tokenizer.pad_token_id
    with torch.inference_mode():
        expected = rm.model.score(rm.model.model(input_ids=last).last_hidden_state[:, -1])[0, 0].item()
    assert alone[0] == pytest.approx(expected, abs=1e-4)
    assert rm.model.config.pad_token_id == rm.tokenizer.pad_token_id


def test_two_labels_give_the_log_odds_of_label_1(rm2_dir):
    m = RewardModel("rm2", str(rm2_dir), device="cpu", dtype="float32", batch_size=3, threads=2)
    try:
        convs = _convs()
        scores = m.score(convs)  # batches of 3 (sorted by length), each right-padded
        m.batch_size = 16
        np.testing.assert_allclose(m.score(convs[::-1])[::-1], scores, atol=1e-4, rtol=0)  # one batch
        for c, s in zip(convs, scores):
            ids = m.tokenizer(m.render(c), add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.inference_mode():
                logits = m.model(input_ids=ids).logits[0]
            assert s == pytest.approx((logits[1] - logits[0]).item(), abs=1e-4)
        assert np.std(scores) > 1e-3
    finally:
        m.close()


def test_causal_lm_dir_is_refused(model_dir):
    with pytest.raises(ConfigError) as e:
        RewardModel("smollm2", str(model_dir), device="cpu", key="judging.judges[0].model")
    msg = str(e.value)
    assert msg.startswith("judging.judges[0].model:")
    assert str(model_dir) in msg and "LlamaForCausalLM: not a sequence-classification model" in msg


def test_missing_or_empty_dir_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^models\.rm\.path: no model directory at '.*nowhere'"):
        RewardModel("rm", str(tmp_path / "nowhere"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^models\.rm\.path: '.*empty' has no config\.json"):
        RewardModel("rm", str(tmp_path / "empty"), device="cpu")


def test_other_label_counts_are_refused(rm_dir, tmp_path):
    d = tmp_path / "rm3"
    d.mkdir()
    cfg = json.loads((rm_dir / "config.json").read_text())
    cfg["id2label"] = {str(i): f"L{i}" for i in range(3)}
    cfg["label2id"] = {f"L{i}": i for i in range(3)}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"^models\.rm\.path: .*num_labels=3"):
        RewardModel("rm", str(d), device="cpu")


def test_calibration_recovers_a_logistic_relation():
    rng = np.random.default_rng(0)
    scores = rng.normal(0.0, 1.5, size=5000)
    labels = rng.random(5000) < 1 / (1 + np.exp(-(2.0 * scores - 1.0)))
    cal = Calibration.fit(scores, labels)
    assert cal.a == pytest.approx(2.0, abs=0.2) and cal.b == pytest.approx(-1.0, abs=0.2)
    grid = np.linspace(-40, 40, 81)
    p = cal.apply(grid)
    assert all(0.0 < x < 1.0 for x in cal.apply([-5, 0, 5]))
    assert all(0.0 <= x <= 1.0 for x in p) and np.all(np.diff(p) >= 0) and p[-1] > p[0]
    assert p_yes([0.5], cal.a, cal.b) == cal.apply([0.5])
    assert p_yes([0.0, 1e6, -1e6], 1.0, 0.0) == [0.5, 1.0, 0.0]  # no overflow


def test_calibration_stays_finite_on_separable_labels():
    cal = Calibration.fit([-2.0, -1.0, 1.0, 2.0], [0, 0, 1, 1])
    assert np.isfinite(cal.a) and cal.a > 0
    with pytest.raises(ValueError, match="both YES and NO"):
        Calibration.fit([0.1, 0.2], [1, 1])


def test_stats_and_close(rm2_dir):
    m = RewardModel("rm", str(rm2_dir), device="cpu", dtype="float32", batch_size=2, threads=2)
    m.score(_convs()[:3])
    s = m.stats()
    assert (s["model"], s["calls"], s["items"]) == ("rm", 1, 3) and s["seconds"] >= 0
    m.close()
    m.close()
    with pytest.raises(RuntimeError, match="closed"):
        m.score(_convs()[:1])


def test_copy_without_tokenizer_template_is_refused(rm_dir, tmp_path):
    d = tmp_path / "notemplate"
    d.mkdir()
    for f in rm_dir.iterdir():  # the check comes before the weights are read: leave them out
        if f.suffix != ".safetensors" and not f.name.startswith("chat_template"):
            shutil.copy(f, d / f.name)
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.raises(ConfigError, match="no chat template"):
        RewardModel("rm", str(d), device="cpu")
