"""The small model interface every stage uses, whatever the backend.

A stage builds `GenRequest`s (chat messages + sampling parameters + the draw's seed) and gets
`Generation`s back in the same order. Backends that can read next-token probabilities (hf)
fill `Generation.p_yes` for requests with `score_after` (a judge's "Verdict:"); backends that
can continue a partial assistant turn (`supports_prefix`) honour `GenRequest.prefix`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GenRequest:
    messages: tuple[tuple[str, str], ...]  # ((role, content), ...)
    sampling: Sampling = field(default_factory=Sampling)
    seed: int = 0  # per-draw seed: the same request and seed give the same draw
    prefix: str = ""  # text the assistant turn starts with (hf backend only)
    # report the probabilities of `choices` at the token right after the first line-start
    # `score_after` in prefix + generated text (a judge's "Verdict:"): the hf backend from the
    # generation's own logits (P(YES)), the openai backend from the answer's top_logprobs
    score_after: str = ""
    choices: tuple[str, ...] = ("YES", "NO")

    @staticmethod
    def chat(user: str, system: str | None = None, **kw) -> GenRequest:
        """A request of one user message (and an optional system message)."""
        msgs = ((("system", system),) if system else ()) + (("user", user),)
        return GenRequest(messages=msgs, **kw)

    def message_dicts(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop", "length", ...
    cached: bool = False
    p_yes: float | None = None  # see GenRequest.score_after
    # the request's choices at the answer token, normalised to sum to 1 ({"A": .7, "B": .2, "TIE": .1});
    # None where the backend gave no reading (no logprobs, or none of the choices among them)
    choice_probs: dict[str, float] | None = None
    # why the answer cannot be used ("empty", "truncated": cut at max_new_tokens), None if it can;
    # set by the openai backend, which also counts these in stats()["unusable"]
    unusable: str | None = None


class Model(Protocol):
    name: str
    supports_prefix: bool

    def generate(self, requests: list[GenRequest], desc: str = "generate") -> list[Generation]: ...

    def stats(self) -> dict: ...
