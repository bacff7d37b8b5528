"""Oracle labels X for accepted draws, chosen by an allocation strategy under a budget.

The pool: for each question, its first accepted draw and that draw's N. A strategy
(`judgeflow.oracle.tp.strategies`) asks for labels at chosen N in batches; each request takes the next
unlabelled accepted draw at that N (a seeded random order), the oracle labels it, and the label
goes back to the strategy. The oracle is either the exact IFBench checkers (`labeller: verifier`)
or an LLM through any backend (`labeller: <models key>`, e.g. GPT-4.1 over the openai backend).
An oracle that abstains (no parseable verdict, or a question the verifier cannot check) costs a
call and is counted as an abstain, never as 0 or 1.

Labels are appended to a checkpoint as they arrive, so a killed job resumes without asking the
oracle again; with an LLM oracle the API cache also makes a forced rerun free.
"""
from __future__ import annotations

import logging
import random
from collections import defaultdict
from typing import TYPE_CHECKING

from judgeflow.generation.prompting import load_template, stable_seed
from judgeflow.judging.verdicts import ABSTAIN, VERDICT_PREFIX, YES, critique_of, label_with_probs, parse_verdict
from judgeflow.judging.verifier import verify
from judgeflow.models import GenRequest, Sampling
from judgeflow.workflow.io import Checkpoint

if TYPE_CHECKING:
    from judgeflow.workflow.settings import OracleSection

log = logging.getLogger(__name__)

VERIFIER = "verifier"


def oracle_prompt(template: str, question: dict, response: str) -> str:
    """The oracle template filled for one response: the question, its criteria as a list, the response."""
    criteria = ("\n".join(f"- {c['description']}" for c in question.get("criteria", []))
                or "- (none beyond the question)")
    return template.format(question=question["prompt"], criteria=criteria, response=response)


class Oracle:
    """Labels (question, response) pairs with X in {1, 0, None (abstain)}."""

    def __init__(self, oracle: OracleSection, models: dict):
        self.name = oracle.labeller
        self.calls = 0
        if self.name != VERIFIER:
            self.model = models[self.name]
            self.template = load_template(oracle.template, {"question", "criteria", "response"},
                                          "oracle.template")
            self.sampling = Sampling(oracle.max_new_tokens, 0.0, 1.0)

    def label(self, pairs: list[tuple[dict, dict]]) -> list[dict]:
        """[(question, draw)] -> [{"label": 1/0/None, "reason", "raw", "cached"}]."""
        self.calls += len(pairs)
        out: list[dict] = []
        if self.name == VERIFIER:
            for q, d in pairs:
                v = verify(q, d["text"])
                if v is None:
                    out.append({"label": None, "reason": "not verifiable: the question has criteria "
                                                         "that are not IFBench instructions", "raw": None})
                elif v["all"] is None:
                    out.append({"label": None, "reason": v["error"], "raw": None})
                else:
                    failed = [c for c, ok in v["criteria"].items() if not ok]
                    out.append({"label": int(v["all"]), "reason": "failed: " + ", ".join(failed) if failed
                                else "all instructions followed", "raw": v["criteria"]})
            return out
        reqs = []
        for q, d in pairs:
            reqs.append(GenRequest.chat(oracle_prompt(self.template, q, d["text"]),
                                        sampling=self.sampling, score_after=VERDICT_PREFIX,
                                        seed=stable_seed("oracle", d["draw_id"])))
        for g in self.model.generate(reqs, desc="oracle"):
            lab, source = label_with_probs(parse_verdict(g.text), g.choice_probs)
            out.append({"label": None if lab == ABSTAIN else int(lab == YES), "label_from": source, "p_yes": g.p_yes,
                        "reason": critique_of(g.text) if lab != ABSTAIN else "oracle abstained (no verdict line)",
                        "raw": g.text, "cached": g.cached, "completion_tokens": g.completion_tokens})
        return out


def accepted_pool(draws: list[dict]) -> dict[int, list[dict]]:
    """N -> the first accepted draws at that N (one per question)."""
    pool = defaultdict(list)
    for d in draws:
        if d.get("first_accept"):
            pool[d["draw"]].append(d)
    return dict(pool)


def label_accepted(draws: list[dict], questions: dict[str, dict], ocfg: OracleSection, n_max: int, seed: int,
                   models: dict, labels_out: str, proxies: dict[str, float] | None = None) -> dict:
    """Run the configured strategy (`ocfg`: the oracle section) against the oracle on draws up to
    `n_max` (draws.n_max), the order seeded by `seed`; write the labels; return the strategy result.
    proxies: {draw_id: f} for a strategy that uses a proxy score (prediction_powered)."""
    from judgeflow.oracle.tp.strategies import PredictionPowered, make_strategy

    pool = accepted_pool(draws)
    rng = random.Random(stable_seed(seed, "oracle-order"))
    queue = {n: rng.sample(items, len(items)) for n, items in sorted(pool.items())}
    strategy = make_strategy(ocfg.strategy, n_max=n_max, threshold=ocfg.threshold, delta=ocfg.delta,
                             budget=ocfg.budget, seed=seed, batch_size=ocfg.batch_size,
                             **ocfg.strategy_options)
    oracle = Oracle(ocfg, models)
    ckpt = Checkpoint(labels_out, key="draw_id")
    order, asked_now, reused, skipped = [], 0, 0, []   # skipped: considered, not sent (unlabelled set)
    if strategy.needs_proxy:
        if proxies is None:
            raise ValueError(f"oracle.strategy {ocfg.strategy} needs proxy scores (oracle.proxy)")
        missing = [d["draw_id"] for items in pool.values() for d in items if d["draw_id"] not in proxies]
        if missing:
            raise ValueError(f"proxy source '{ocfg.proxy}' has no score for draw {missing[0]} "
                             f"({len(missing)} accepted draws without one)")
    while strategy.needs_proxy:
        # the one strategy driven by proxy scores; `proxies` was checked above
        assert isinstance(strategy, PredictionPowered) and proxies is not None
        available = {n: len(queue.get(n, [])) for n in range(1, n_max + 1)}
        plan = strategy.propose_counts(available)
        if not plan:
            break
        for n, k in plan.items():
            items = queue[n][-k:][::-1]          # the next k in the seeded order (popped from the end)
            f = [proxies[d["draw_id"]] for d in items]
            ask = strategy.select(n, f)
            asked = [d for d, a in zip(items, ask) if a]
            new = [d for d in asked if d["draw_id"] not in ckpt]
            if new:
                got = oracle.label([(questions[d["question_id"]], d) for d in new])
                ckpt.add_many({"draw_id": d["draw_id"], "question_id": d["question_id"], "n": d["draw"],
                               "oracle": oracle.name, "proxy": proxies[d["draw_id"]], **g}
                              for d, g in zip(new, got))
                asked_now += len(new)
            reused += len(asked) - len(new)
            labels = [ckpt.done[d["draw_id"]]["label"] if a else None for d, a in zip(items, ask)]
            strategy.update_draws(n, f, ask, labels, sequential=False)
            del queue[n][len(queue[n]) - k:]
            order += [d["draw_id"] for d in asked]
            skipped += [d for d, a in zip(items, ask) if not a]
    while not strategy.needs_proxy:
        available = {n: len(queue.get(n, [])) for n in range(1, n_max + 1)}
        batch = strategy.propose(available)
        if not batch:
            break
        picks = []
        for n in batch:
            if not queue.get(n):
                raise RuntimeError(f"strategy {ocfg.strategy} asked for a label at N={n} with none left")
            picks.append(queue[n].pop())
        new = [d for d in picks if d["draw_id"] not in ckpt]
        if new:
            got = oracle.label([(questions[d["question_id"]], d) for d in new])
            ckpt.add_many({"draw_id": d["draw_id"], "question_id": d["question_id"], "n": d["draw"],
                           "oracle": oracle.name, **g} for d, g in zip(new, got))
            asked_now += len(new)
        reused += len(picks) - len(new)
        for d in picks:
            strategy.update(d["draw"], ckpt.done[d["draw_id"]]["label"])
            order.append(d["draw_id"])
    curve_calls = 0
    if ocfg.label_all_accepted:  # the curve from every accepted draw (free with the verifier)
        rest = skipped + [d for n in sorted(queue) for d in queue[n]]
        new = [d for d in rest if d["draw_id"] not in ckpt]
        for start in range(0, len(new), ocfg.batch_size):
            part = new[start:start + ocfg.batch_size]
            got = oracle.label([(questions[d["question_id"]], d) for d in part])
            ckpt.add_many({"draw_id": d["draw_id"], "question_id": d["question_id"], "n": d["draw"],
                           "oracle": oracle.name, "for": "curve", **g} for d, g in zip(part, got))
        curve_calls = len(new)
        order += [d["draw_id"] for d in rest]
    ckpt.finish(labels_out, order)
    result = strategy.result()
    result["curve_calls"] = curve_calls
    result["proxy"] = ocfg.proxy if strategy.needs_proxy else None
    result.update({"oracle": oracle.name, "asked_this_run": asked_now, "from_checkpoint": reused,
                   "accepted_per_n": {n: len(v) for n, v in sorted(pool.items())},
                   "questions": len({d["question_id"] for d in draws}),
                   "never_accepted": len({d["question_id"] for d in draws if d.get("n_accept") is None})})
    log.info("oracle: N*=%s after %s calls (%s abstains); %d asked now, %d from checkpoint",
             result.get("nstar"), result.get("calls"), result.get("abstains"), asked_now, reused)
    return result


def label_all(draws: list[dict], questions: dict[str, dict], ocfg: OracleSection, models: dict, out: str,
              max_draw: int) -> list[dict]:
    """Oracle labels for every draw with index <= max_draw (Best-of-N); resumable, in draw order."""
    oracle = Oracle(ocfg, models)
    ckpt = Checkpoint(out, key="draw_id")
    todo = [d for d in draws if d["draw"] <= max_draw and d["draw_id"] not in ckpt]
    for start in range(0, len(todo), ocfg.batch_size):
        part = todo[start:start + ocfg.batch_size]
        got = oracle.label([(questions[d["question_id"]], d) for d in part])
        ckpt.add_many({"draw_id": d["draw_id"], "question_id": d["question_id"], "n": d["draw"],
                       "oracle": oracle.name, **g} for d, g in zip(part, got))
    ids = [d["draw_id"] for d in draws if d["draw"] <= max_draw]
    ckpt.finish(out, ids)
    return [ckpt.done[i] for i in ids]
