"""`judgeflow estimate`: the API calls and the money each stage will spend, before anything is paid.

From the config alone (and the question source, read as prepare_questions reads it), for every stage
that sends requests to a model of the `openai` backend:

* **calls**: the requests the stage sends, by the stage's own arithmetic:
  - clean_questions: every question with a non-empty prompt within questions.max_prompt_chars;
  - sample_responses: sampling.n_samples per question of the sampled pool (kept, less the held-out and
    calibration questions);
  - evaluate_policies: two orders per trained variant, held-out question and evaluation.n_samples;
  - label_oracle: the strategy's oracle.budget (a strategy that certifies early spends less), plus, with
    oracle.label_all_accepted, every other accepted draw (at most draws.n_max per question);
  - tree_search_gate: two orders per refined root, gate and self-play round (at most: every root solved).
  Questions are counted as if cleaning keeps them all (an upper bound where the oracle rejects some).
  A stage whose calls hang on verdicts not yet given (the judges, refinements, the tree's nodes, draws
  on an API policy) is listed with no count, and why.
* **tokens**: each request's prompt, rendered from its template and the question, counted with the
  model's own tokenizer where the config names a local copy (`serve.path`, or `model` as a directory),
  else as its UTF-8 bytes / 4 (an English BPE's usual ratio). A response inside a prompt (a comparison,
  a label) counts as its full token limit. Completions count as their full `max_new_tokens`: exact for a
  model that talks to the limit, an over-estimate for a terse one. `pilot=` a run's ledger
  (logs/<run>/costs.jsonl, from a smaller run of the same stages) replaces both by the mean tokens per
  call it measured for that stage and model.
* **cost**: at `models.<name>.price` (the Batch API's share where `oracle.batch` sends the stage's calls
  through it); `cost_at_most` is the cap's own worst case (`ledger.worst_cost`: every prompt byte a token,
  every completion at its limit), so a run within `budget.max_cost` by this figure cannot be stopped by it.
"""
from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from judgeflow.models import GenRequest
from judgeflow.models.ledger import Rate, prompt_tokens_at_most, read as read_ledger

__all__ = ["Estimate", "estimate", "table"]

BYTES_PER_TOKEN = 4


@dataclass
class Estimate:
    """One stage's spend on one model."""
    rule: str
    model: str
    calls: int | None                 # expected; None: not estimated (`basis` says why)
    calls_at_most: int | None
    prompt_tokens: int = 0            # expected, all calls together
    completion_tokens: int = 0
    cost: float | None = None         # None: the model has no price
    cost_at_most: float | None = None
    basis: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Req:
    """A request's shape: its chat messages (a response inside counts `extra` tokens) and its limit."""
    messages: list[dict]
    max_tokens: int
    extra: int = 0


class _Tokens:
    """Prompt tokens of a chat request for one model: its tokenizer's chat template where a local copy
    exists, else UTF-8 bytes / BYTES_PER_TOKEN."""

    def __init__(self, spec: Mapping):
        self.tokenizer = None
        for where in ((spec.get("serve") or {}).get("path"), spec.get("model"), spec.get("path")):
            if where and Path(str(where), "tokenizer_config.json").is_file():
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(str(where))
                break

    def count(self, req: _Req) -> int:
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=True)
            n = len(ids["input_ids"] if isinstance(ids, Mapping) else ids)
        else:
            n = math.ceil(sum(len(str(m["content"]).encode("utf-8")) for m in req.messages) / BYTES_PER_TOKEN)
        return n + req.extra

    @staticmethod
    def at_most(req: _Req) -> int:
        """The cap's bound (every byte a token) with a response inside at 8 bytes per token at most."""
        return prompt_tokens_at_most({"messages": req.messages}) + 8 * req.extra


def _chat(text: str, system: str | None = None) -> list[dict]:
    return GenRequest.chat(text, system=system).message_dicts()


def _questions(config: Mapping) -> list[dict]:
    """The question file prepare_questions would write, read into memory (written to a scratch folder)."""
    from judgeflow.questions.sources import prepare_questions
    from judgeflow.workflow.io import read_jsonl
    from judgeflow.workflow.settings import Questions

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp, "questions.jsonl"))
        prepare_questions(Questions.model_validate(config["questions"]), out)
        return read_jsonl(out)


def _asked(rows: list[dict], config: Mapping) -> list[dict]:
    """The questions clean_questions can keep (the ones it sends to the oracle when cleaning is on)."""
    limit = config["questions"].get("max_prompt_chars")
    return [q for q in rows if q["prompt"].strip() and not (limit and len(q["prompt"]) > limit)]


def _split(kept: list[dict], config: Mapping) -> tuple[list[dict], list[dict]]:
    """(pool, heldout) as clean_questions splits the kept questions (assumed: every one kept)."""
    from judgeflow.questions.sources import split_heldout

    seed = config["seed"]
    pool, heldout = split_heldout(kept, config["questions"]["heldout"], seed)
    n_cal = config["judging"]["calibration"]["questions"]
    if isinstance(n_cal, float):
        n_cal = max(1, round(n_cal * len(pool)))
    pool, _ = split_heldout(pool, n_cal, seed, "calibration")
    return pool, heldout


def _template(name: str, fields: set[str], key: str) -> str:
    from judgeflow.generation.prompting import load_template

    return load_template(name, fields, key)


def _is_model(value: Any) -> bool:
    return value not in (None, "verifier", "none", "judges")


def _policy_tokens(config: Mapping, own: int | None) -> int:
    return own or config["sampling"]["max_new_tokens"]


def _requests(config: Mapping, rows: list[dict]) -> dict[str, tuple[str, list[_Req], int | None, str]]:
    """Per rule: (model, its requests as estimated, their count at most or None when it equals the
    expected, how they were counted)."""
    out: dict[str, tuple[str, list[_Req], int | None, str]] = {}
    cl, sa, ev, o, dr = (config[k] for k in ("cleaning", "sampling", "evaluation", "oracle", "draws"))
    tree = config["refining"]["tree_search"]
    asked = _asked(rows, config)
    pool, heldout = _split(asked, config)
    if cl["enabled"]:
        t = _template(cl["template"], {"question"}, "cleaning.template")
        out["clean_questions"] = (cl["model"], [_Req(_chat(t.format(question=q["prompt"])), cl["max_new_tokens"])
                                                for q in asked],
                                  None, f"{len(asked)} questions asked (non-empty, within questions.max_prompt_chars)")
    out["sample_responses"] = (sa["model"], [_Req(_chat(q["prompt"], sa["system_prompt"]), sa["max_new_tokens"])
                                             for q in pool for _ in range(sa["n_samples"])],
                               None, f"{len(pool)} pool questions x sampling.n_samples {sa['n_samples']}")
    variants = config["training"]["variants"] or []
    if _is_model(ev["oracle"]) and variants:
        t = _template(ev["oracle_template"], {"question", "response_a", "response_b"}, "evaluation.oracle_template")
        two = 2 * _policy_tokens(config, ev["max_new_tokens"])
        one = [_Req(_chat(t.format(question=q["prompt"], response_a="", response_b="")), ev["oracle_max_new_tokens"],
                    two) for q in heldout for _ in range(ev["n_samples"])]
        out["evaluate_policies"] = (ev["oracle"], one * 2 * len(variants), None,
                                    f"{len(variants)} variants x {len(heldout)} held-out questions x "
                                    f"evaluation.n_samples {ev['n_samples']} x 2 orders")
    if _is_model(o["labeller"]) and dr["enabled"]:
        t = _template(o["template"], {"question", "criteria", "response"}, "oracle.template")
        resp = _policy_tokens(config, dr["max_new_tokens"])
        per_q = [_Req(_chat(t.format(question=q["prompt"], criteria="", response="")), o["max_new_tokens"], resp)
                 for q in pool]
        drawn = [r for r in per_q for _ in range(dr["n_max"])]  # every draw accepted: the most there can be
        n = min(o["budget"], len(drawn))
        expected = (drawn if o["label_all_accepted"] else drawn[:n]) if drawn else []
        basis = f"oracle.budget {o['budget']}"
        if o["label_all_accepted"]:
            basis += f" + every accepted draw (at most {len(pool)} questions x draws.n_max {dr['n_max']})"
        out["label_oracle"] = (o["labeller"], expected, None, basis)
    if "tree_search" in (config["refining"]["strategy"] or []) and _is_model(tree["oracle"]):
        t = _template(ev["oracle_template"], {"question", "response_a", "response_b"}, "evaluation.oracle_template")
        two = _policy_tokens(config, sa["max_new_tokens"]) + tree["max_new_tokens"]
        roots = list(pool) if tree["root_choice"] == "one_per_question" else \
            [q for q in pool for _ in range(sa["n_samples"])]
        roots = roots[:round(tree["roots"] * len(roots))]  # a seeded random share: its expected size
        per = [_Req(_chat(t.format(question=q["prompt"], response_a="", response_b="")), ev["oracle_max_new_tokens"],
                    two) for q in roots]
        gates, rounds = len(tree["gates"]), tree["rounds"]
        # every round compares each gate's roots: round 1 on one search, later rounds per chain or shared
        out["tree_search_gate"] = (tree["oracle"], per * 2 * gates * rounds, None,
                                   f"at most: {rounds} rounds x {len(roots)} roots x {gates} gates x 2 orders (every "
                                   "root solved; an unsolved root or one that passed at the start asks nothing)")
    return out


def _not_estimated(config: dict, rules: set[str]) -> list[Estimate]:
    """API models that stages outside the arithmetic run: named, with why they are not counted."""
    from judgeflow.workflow.pipeline import STAGES, inactive_stages, model_names

    skip = inactive_stages(config) | rules
    out = []
    for name, stage in STAGES.items():
        if name in skip:
            continue
        for m in model_names(stage, config):
            if config["models"].get(m, {}).get("backend") == "openai":
                out.append(Estimate(name, m, None, None, basis="not estimated: its calls depend on verdicts and "
                                                               "refinements not yet made"))
    return out


def estimate(config: Mapping, pilot: str | None = None) -> list[Estimate]:
    """Every API stage's expected calls, tokens and cost, from a validated config (settings.validate)."""
    rows = _questions(config)
    measured: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for line in read_ledger(pilot) if pilot else []:
        if line.get("kind") != "saved":
            m = measured[(line["rule"], line["model"])]
            m[0] += 1
            m[1] += line["prompt_tokens"]
            m[2] += line["completion_tokens"]
    out = []
    counted = set()
    batch_rules = {"clean_questions", "evaluate_policies", "tree_search_gate"} if config["oracle"]["batch"] else set()
    for rule, (model, reqs, at_most, basis) in _requests(config, rows).items():
        spec = config["models"][model]
        if spec.get("backend") != "openai":
            continue
        counted.add(rule)
        tok = _Tokens(spec)
        prompt = sum(tok.count(r) for r in reqs)
        completion = sum(r.max_tokens for r in reqs)
        worst_prompt = sum(tok.at_most(r) for r in reqs)
        if (rule, model) in measured and measured[(rule, model)][0]:
            n, p, c = measured[(rule, model)]
            prompt, completion = round(p / n * len(reqs)), round(c / n * len(reqs))
            basis += f"; tokens per call measured by the pilot ({n} calls)"
        cost = cost_at_most = None
        if spec.get("price"):
            rate, batch = Rate(**spec["price"]), rule in batch_rules
            cost = rate.cost(prompt, completion, batch)
            cost_at_most = rate.cost(worst_prompt, sum(r.max_tokens for r in reqs), batch)
        out.append(Estimate(rule, model, len(reqs), at_most if at_most is not None else len(reqs),
                            prompt, completion, cost, cost_at_most, basis))
    return out + _not_estimated(dict(config), counted)


def table(rows: list[Estimate]) -> str:
    """A plain-text table of the estimate, with the totals."""
    def money(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    head = f"{'rule':<20} {'model':<16} {'calls':>8} {'prompt tok':>11} {'compl. tok':>11} {'cost':>10} {'at most':>10}"
    if not rows:
        return "no stage sends requests to a model of the openai backend: nothing to pay"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.calls is None:
            lines.append(f"{r.rule:<20} {r.model:<16} {'?':>8}  {r.basis}")
            continue
        lines.append(f"{r.rule:<20} {r.model:<16} {r.calls:>8} {r.prompt_tokens:>11} {r.completion_tokens:>11} "
                     f"{money(r.cost):>10} {money(r.cost_at_most):>10}  {r.basis}")
    priced = [r for r in rows if r.cost is not None]
    lines.append("-" * len(head))
    lines.append(f"{'total':<20} {'':<16} {sum(r.calls or 0 for r in rows):>8} "
                 f"{sum(r.prompt_tokens for r in rows):>11} {sum(r.completion_tokens for r in rows):>11} "
                 f"{money(sum(r.cost or 0 for r in priced) if priced else None):>10} "
                 f"{money(sum(r.cost_at_most or 0 for r in priced) if priced else None):>10}")
    return "\n".join(lines)
