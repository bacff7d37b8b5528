"""Proxy scores f in [0, 1] for accepted draws: what the cheap side knows about each draw's X.

Sources (``oracle.proxy``):

* ``judges``: the mean of the judges' P(YES) over judges and criteria of the draw (a verdict with
  no P(YES), e.g. a hosted judge without logprobs, counts as its 0/1 label);
* a models key: that model's P(YES) after "Verdict:" with the oracle's own template
  (``oracle.template``), through any backend;
* the probe's predicted P(X=1 | accepted) (``probe``), used by the replay (``oracle_replay``).

A score that is NaN or outside [0, 1] is an error that names the draw and the source; it is never
clipped. The prediction-powered strategy stays valid whatever the scores are; they only buy power.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from judgeflow.generation.prompting import load_template, stable_seed
from judgeflow.judging.verdicts import VERDICT_PREFIX, YES
from judgeflow.models import GenRequest, Sampling
from judgeflow.oracle.labelling import oracle_prompt

if TYPE_CHECKING:
    from judgeflow.workflow.settings import OracleSection

__all__ = ["PROXY_FIELDS", "check_proxy", "judges_proxy", "model_proxy"]

PROXY_FIELDS = ("draw_id", "question_id", "n", "proxy", "source")


def check_proxy(value, draw_id: str, source: str) -> float:
    """The score as a float; ValueError naming the draw and the source unless it is a number in [0, 1]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value) \
        and 0.0 <= value <= 1.0
    if not ok:
        raise ValueError(f"proxy score of draw {draw_id} from source '{source}' is {value!r}, not a number in "
                         "[0, 1] (scores are never clipped)")
    return float(value)


def _record(d: dict, f, source: str) -> dict:
    return {"draw_id": d["draw_id"], "question_id": d["question_id"], "n": d["draw"],
            "proxy": check_proxy(f, d["draw_id"], source), "source": source}


def judges_proxy(draws: list[dict], verdicts: list[dict]) -> list[dict]:
    """One record per first-accepted draw: the judges' mean P(YES) over judges x criteria."""
    by_draw: dict[str, list[float]] = {}
    for v in verdicts:
        p = v.get("p_yes")
        by_draw.setdefault(v["response_id"], []).append(float(v["label"] == YES) if p is None else p)
    out = []
    for d in draws:
        if d.get("first_accept"):
            ps = by_draw.get(d["draw_id"])
            if not ps:
                raise ValueError(f"proxy source 'judges': draw {d['draw_id']} has no verdicts")
            out.append(_record(d, sum(ps) / len(ps), "judges"))
    return out


def model_proxy(draws: list[dict], questions: dict[str, dict], oracle: OracleSection, model,
                name: str) -> list[dict]:
    """One record per first-accepted draw: model `name`'s P(YES) that the draw satisfies the question,
    asked with the oracle's template and max_new_tokens (`oracle`: the oracle section)."""
    template = load_template(oracle.template, {"question", "criteria", "response"}, "oracle.template")
    # a backend that continues a prefix answers after "Verdict:" at once (P(YES) at its first token);
    # another writes the oracle's answer, and P(YES) is read after its "Verdict:" (logprobs on)
    prefix = VERDICT_PREFIX if model.supports_prefix else ""
    sampling = Sampling(2 if prefix else oracle.max_new_tokens, 0.0, 1.0)
    accepted = [d for d in draws if d.get("first_accept")]
    reqs = []
    for d in accepted:
        reqs.append(GenRequest.chat(oracle_prompt(template, questions[d["question_id"]], d["text"]),
                                    sampling=sampling, score_after=VERDICT_PREFIX, prefix=prefix,
                                    seed=stable_seed("proxy", d["draw_id"])))
    gens = model.generate(reqs, desc=f"proxy {name}")
    for d, g in zip(accepted, gens):
        if g.p_yes is None:
            raise ValueError(f"proxy source '{name}' gave no P(YES) for draw {d['draw_id']} (no 'Verdict:' answer "
                             f"with token probabilities; set models.{name}.logprobs or use another source)")
    return [_record(d, g.p_yes, name) for d, g in zip(accepted, gens)]
