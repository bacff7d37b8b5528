"""Reward-model judges: a transformers sequence-classification model scores each (question, criterion, response).

A `reward_model` judge is any transformers directory whose config declares a
`...ForSequenceClassification` architecture (a Skywork-style reward model on a GPU node, or a
judge the workflow trains itself and saves with `save_pretrained`). It gives one raw score per
conversation; a calibration fitted elsewhere turns the score into P(YES):

    P(YES) = sigmoid(a * score + b)                      (Platt scaling: `Calibration`, `p_yes`)

The conversation a score is read from (`conversation`):

    user:      "{question}\\n\\nCriterion: {criterion}"
    assistant: "{response}"

rendered with the tokenizer's own chat template (no generation prompt: the assistant turn is
complete). A judge trained by the workflow must be trained on the same rendering.

Batching and padding: conversations are sorted by token length and scored `batch_size` at a
time, RIGHT-padded, with the attention mask. transformers' sequence-classification head
(GenericForSequenceClassification in transformers.modeling_layers, which
LlamaForSequenceClassification and the other decoder heads use) reads the logits at the
rightmost token that is not `config.pad_token_id` (either padding side), so the pad id is set on
the model's config. Right padding keeps a conversation's real tokens at positions 0..n-1, exactly
as when it is scored alone (the model's default position ids are 0..L-1 whatever the mask), and
causal attention never lets a real token see the pads after it: a score does not depend on the
batch it is in, up to float rounding (about 2e-6 in float32 on SmolLM2-135M). Left padding, with
the mask, measured the same on that model (RoPE depends only on relative positions), but it
shifts each short conversation's absolute positions and is wrong without the mask.

Note: the head skips every trailing token equal to the pad id. When the tokenizer has no pad
token it becomes the eos token; a chat template that ends its assistant turn with that token
then has its score read at the token before it -- alone and in a batch alike, and as the same
head does when it is trained with the same pad id.
"""
from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from judgeflow.errors import ConfigError
from judgeflow.judging.trained import judge_text

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

log = logging.getLogger(__name__)

SEQ_CLS_SUFFIX = "ForSequenceClassification"
SEQ_CLS_PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The chat a reward model scores for one (question, criterion, response): the same one a trained judge
# reads (the question and "Criterion: ..." as the user turn, the response as the assistant turn), so
# its score rates the response as an answer to a question that asks for the criterion.
conversation = judge_text


def p_yes(scores: Sequence[float], a: float, b: float) -> list[float]:
    """P(YES) = sigmoid(a * score + b) for each raw score (Platt scaling), computed without overflow."""
    out = []
    for s in scores:
        z = a * float(s) + b
        out.append(1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z)))
    return out


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of raw reward scores: P(YES) = sigmoid(a * score + b)."""

    a: float
    b: float

    @classmethod
    def fit(cls, scores: ArrayLike, labels: ArrayLike) -> Calibration:
        """Fit a and b by logistic regression of the labels (1 = YES) on the 1-d score.

        Uses Platt's (1999) targets instead of hard 0/1 labels: a YES counts as
        (N+ + 1) / (N+ + 2) of a YES and a NO as 1 / (N- + 2) of one (each item is fitted twice,
        once per class, weighted by its target), unpenalised otherwise. The fit then stays finite
        when the scores separate the labels, as they may on a small labelled set.
        """
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(scores, dtype=np.float64).reshape(-1)
        y = np.asarray(labels).astype(bool).reshape(-1)
        if x.shape != y.shape:
            raise ValueError(f"Calibration.fit: {x.size} scores but {y.size} labels")
        if not np.isfinite(x).all():
            raise ValueError("Calibration.fit: the scores must be finite")
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos == 0 or n_neg == 0:
            raise ValueError(f"Calibration.fit: needs both YES and NO labels (got {n_pos} YES, {n_neg} NO)")
        target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        xx = np.concatenate([x, x]).reshape(-1, 1)
        yy = np.concatenate([np.ones_like(x), np.zeros_like(x)])
        w = np.concatenate([target, 1 - target])
        lr = LogisticRegression(C=np.inf, max_iter=1000, tol=1e-8)
        lr.fit(xx, yy, sample_weight=w)
        return cls(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))

    def apply(self, scores: Sequence[float]) -> list[float]:
        """P(YES) for each raw score."""
        return p_yes(scores, self.a, self.b)


def _resolve_device(device: str) -> str:
    # as HFModel.__init__ (hf.py) does it inline: auto = cuda if available
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def check_seq_cls_dir(path: str, key: str):
    """The AutoConfig of `path` if it is a sequence-classification model directory, else a ConfigError naming `key`."""
    from transformers import AutoConfig

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{key}: no model directory at '{path}' (expected a transformers sequence-classification "
                          "model directory with config.json)")
    if not (p / "config.json").exists():
        raise ConfigError(f"{key}: '{path}' has no config.json (expected a transformers sequence-classification "
                          "model directory)")
    try:
        config = AutoConfig.from_pretrained(str(p))
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{key}: cannot read the config of '{path}': {e}") from e
    archs = list(getattr(config, "architectures", None) or [])
    if archs:
        if not any(a.endswith(SEQ_CLS_SUFFIX) for a in archs):
            hint = ""
            if "AutoModelForSequenceClassification" in (getattr(config, "auto_map", None) or {}):
                hint = " (its auto_map points to custom code, which this backend does not run)"
            raise ConfigError(f"{key}: '{path}' is {', '.join(archs)}: not a sequence-classification model "
                              f"(expected an architecture ending in {SEQ_CLS_SUFFIX}){hint}")
    elif getattr(config, "problem_type", None) not in SEQ_CLS_PROBLEM_TYPES:
        raise ConfigError(f"{key}: '{path}' declares no architecture and no sequence-classification problem_type "
                          f"(model_type {config.model_type!r}): not a sequence-classification model")
    if config.num_labels not in (1, 2):
        raise ConfigError(f"{key}: '{path}' has num_labels={config.num_labels}; a reward model needs 1 (a score) "
                          "or 2 (the log-odds of label 1 are the score)")
    return config


class RewardModel:
    """A sequence-classification model that gives one raw reward per chat conversation."""

    supports_prefix = False

    def __init__(self, name: str, path: str, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 16, threads: int | None = None, key: str | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.key = key or f"models.{name}.path"
        if dtype not in DTYPES:
            raise ConfigError(f"models.{name}.dtype: unknown dtype '{dtype}' (expected one of {', '.join(DTYPES)})")
        config = check_seq_cls_dir(path, self.key)
        if threads:
            torch.set_num_threads(threads)
        self.name, self.path, self.batch_size = name, str(path), batch_size
        self.device = _resolve_device(device)
        t0 = time.time()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, padding_side="right")
        if not self.tokenizer.chat_template:
            raise ConfigError(f"{self.key}: the tokenizer of '{path}' has no chat template (needed to render "
                              "the conversation a reward is read from)")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.path, config=config, dtype=DTYPES[dtype]).to(self.device).eval()
        # the head reads the rightmost token that is not the pad id: it must be the tokenizer's
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.num_labels = int(self.model.config.num_labels)
        log.info("loaded reward model %s from %s on %s in %.1fs", name, path, self.device, time.time() - t0)
        self.calls = 0
        self.items = 0
        self.seconds = 0.0

    def render(self, conv: list[dict]) -> str:
        """The conversation as the model reads it (the tokenizer's chat template, turn complete)."""
        text = self.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=False)
        assert isinstance(text, str)  # tokenize=False: the rendered text
        return text

    def _scores_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.num_labels == 1:
            return logits[:, 0]
        if self.num_labels == 2:
            return logits[:, 1] - logits[:, 0]  # the log-odds of label 1
        raise ConfigError(f"{self.key}: num_labels={self.num_labels}; a reward model needs 1 or 2")

    @torch.inference_mode()
    def score(self, conversations: list[list[dict]]) -> list[float]:
        """The raw reward of each conversation (see `conversation`), in the order given."""
        if self.model is None:
            raise RuntimeError(f"reward model {self.name} is closed")
        t0 = time.time()
        ids = [self.tokenizer(self.render(c), add_special_tokens=False)["input_ids"] for c in conversations]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first: similar lengths share a batch
        out: list[float] = [0.0] * len(ids)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, padding=True, return_tensors="pt")
            on_device = {k: v.to(self.device) for k, v in enc.items()}
            logits = self.model(input_ids=on_device["input_ids"], attention_mask=on_device["attention_mask"],
                                use_cache=False).logits
            for i, s in zip(idx, self._scores_from_logits(logits).tolist()):
                out[i] = float(s)
        self.calls += 1
        self.items += len(ids)
        self.seconds += time.time() - t0
        return out

    def stats(self) -> dict:
        return {"backend": "hf", "kind": "reward_model", "model": self.name, "calls": self.calls,
                "items": self.items, "seconds": round(self.seconds, 3)}

    def close(self) -> None:
        """Free the weights (idempotent); `score` fails afterwards."""
        if getattr(self, "model", None) is None:
            return
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
