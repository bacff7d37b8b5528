"""One function per workflow stage. Each takes file paths and the validated config; the thin
`workflow/scripts/*.py` entry points call exactly one of these."""
from __future__ import annotations

import logging

from . import judging, pairs as pairs_mod, questions as questions_mod, refining, sampling
from .io import read_jsonl, read_jsonl_many, write_csv, write_json, write_jsonl
from .models import open_models

log = logging.getLogger(__name__)


def _questions_by_id(path: str) -> dict[str, dict]:
    return {q["question_id"]: q for q in read_jsonl(path, required=("question_id", "prompt"))}


def _log_stats(models: dict) -> dict:
    stats = {name: m.stats() for name, m in models.items()}
    for s in stats.values():
        log.info("model stats: %s", s)
    return stats


def prepare_questions(config: dict, output: str) -> None:
    n = questions_mod.prepare_questions(config["questions"], output)
    log.info("wrote %d questions to %s", n, output)


def clean_questions(config: dict, questions: str, kept: str, rejected: str, summary: str,
                    log_dir: str, threads: int | None = None, heldout: str | None = None) -> None:
    ccfg = config["cleaning"]
    names = {"cleaning.model": ccfg["model"]} if ccfg["enabled"] else {}
    with open_models(config, names, log_dir=log_dir, threads=threads) as models:
        result = questions_mod.clean_questions(questions, kept, rejected, config, models, heldout)
        result["models"] = _log_stats(models)
    write_json(summary, result)


def sample_responses(config: dict, kept: str, shard: int, output: str, threads: int | None = None) -> None:
    qs = sampling.shard_of(read_jsonl(kept), shard, config["sampling"]["shards"])
    name = config["sampling"]["model"]
    with open_models(config, {"sampling.model": name}, threads=threads) as models:
        sampling.sample_responses(qs, config, models[name], output)
        _log_stats(models)


def _judge(config: dict, kept: str, items: list[dict], verdicts_out: str, aggregate_out: str,
           threads: int | None) -> None:
    questions = _questions_by_id(kept)
    judges = judging.judges_from_config(config)
    names = {f"judging.judges[{i}].model": j.model for i, j in enumerate(judges)}
    with open_models(config, names, threads=threads) as models:
        verdicts = judging.judge_items(items, questions, config, models, verdicts_out)
        _log_stats(models)
    write_jsonl(aggregate_out, judging.aggregate(verdicts, items, questions, config))


def judge_responses(config: dict, kept: str, responses: str, verdicts_out: str, aggregate_out: str,
                    threads: int | None = None) -> None:
    items = [{**r, "item_id": r["response_id"], "refinement_id": None} for r in read_jsonl(responses)]
    _judge(config, kept, items, verdicts_out, aggregate_out, threads)


def judge_refinements(config: dict, kept: str, refinements: str, verdicts_out: str, aggregate_out: str,
                      threads: int | None = None) -> None:
    items = [{**r, "item_id": r["refinement_id"]} for r in read_jsonl(refinements)]
    _judge(config, kept, items, verdicts_out, aggregate_out, threads)


def refine_responses(config: dict, kept: str, responses: str, verdicts: str, aggregates: str, output: str,
                     threads: int | None = None) -> None:
    name = config["refining"]["model"]
    with open_models(config, {"refining.model": name}, threads=threads) as models:
        refining.refine_responses(read_jsonl(responses), read_jsonl(aggregates), read_jsonl(verdicts),
                                  _questions_by_id(kept), config, models[name], output)
        _log_stats(models)


def build_pairs(config: dict, kept: str, responses: list[str], response_aggregates: list[str],
                response_verdicts: list[str], refinements: list[str], refinement_aggregates: list[str],
                refinement_verdicts: list[str], multi_out: str, full_out: str, summary_csv: str,
                summary_json: str) -> None:
    made, rows, overall = pairs_mod.build_pairs(
        _questions_by_id(kept), read_jsonl_many(responses), read_jsonl_many(refinements),
        read_jsonl_many(refinement_aggregates), read_jsonl_many(response_aggregates),
        read_jsonl_many(response_verdicts) + read_jsonl_many(refinement_verdicts),
        config["pairs"]["require"])
    write_jsonl(multi_out, made[refining.MULTI])
    write_jsonl(full_out, made[refining.FULL])
    write_csv(summary_csv, rows)
    write_json(summary_json, overall)
    log.info("pairs: %s", overall)
