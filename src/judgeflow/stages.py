"""One function per workflow stage. Each takes file paths and the validated config; the thin
`workflow/scripts/*.py` entry points call exactly one of these."""
from __future__ import annotations

import logging

from . import draws as draws_mod, judging, pairs as pairs_mod, questions as questions_mod, refining, sampling
from .io import read_jsonl, read_jsonl_many, write_csv, write_json, write_jsonl
from .models import open_models

log = logging.getLogger(__name__)


def _questions_by_id(path: str) -> dict[str, dict]:
    return {q["question_id"]: q for q in read_jsonl(path, required=("question_id", "prompt"))}


# The fields of a draw record (draws.sample_until_accept) that the oracle stages read.
DRAW_FIELDS = ("draw_id", "question_id", "draw", "text", "n_max")


def _read_draws(paths: list[str]) -> list[dict]:
    return read_jsonl_many(paths, required=DRAW_FIELDS)


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


def sample_until_accept(config: dict, kept: str, shard: int, output: str, verdicts_out: str,
                        threads: int | None = None) -> None:
    qs = sampling.shard_of(read_jsonl(kept), shard, config["sampling"]["shards"])
    policy = config["draws"].get("model") or config["sampling"]["model"]
    names = {"draws.model": policy,
             **{f"judging.judges[{i}].model": j["model"] for i, j in enumerate(config["judging"]["judges"])}}
    with open_models(config, names, threads=threads) as models:
        draws_mod.sample_until_accept(qs, config, models, output, verdicts_out)
        _log_stats(models)


def label_oracle(config: dict, kept: str, draws_files: list[str], labels_out: str, nstar_out: str,
                 curve_csv: str, curve_png: str, fit_out: str, log_dir: str | None = None,
                 threads: int | None = None) -> None:
    from . import oracle as oracle_mod, oracle_analysis as oa
    from .tp import fit as tp_fit, model as tp_model

    ocfg, n_max = config["oracle"], config["draws"]["n_max"]
    draws = _read_draws(draws_files)
    questions = _questions_by_id(kept)
    names = {} if ocfg["labeller"] == oracle_mod.VERIFIER else {"oracle.labeller": ocfg["labeller"]}
    with open_models(config, names, log_dir=log_dir, threads=threads) as models:
        result = oracle_mod.label_accepted(draws, questions, config, models, labels_out)
        result["models"] = _log_stats(models)
    labels = {r["draw_id"]: r for r in read_jsonl(labels_out)}
    records = oa.per_question_records(draws, labels)
    fit = tp_fit.fit_model(records)
    write_json(fit_out, fit)
    curve = tp_model.tp_curve(n_max, a=fit["a"], b=fit["b"], p0=fit["p0"], p1=fit["p1"]) if fit.get("ok") else None
    rows = oa.tp_curve_rows(draws, labels, n_max, ocfg["interval"], ocfg["delta"], curve, result)
    oa.write_curve(rows, curve_csv)
    oa.plot_tp_curve(rows, ocfg["threshold"], result.get("nstar", 0), curve_png,
                     f"run {config['run']}: N*={result.get('nstar', 0)} by {result['strategy']} after "
                     f"{result['calls']} oracle calls (+{result['curve_calls']} for the curve), "
                     f"T={ocfg['threshold']}, delta={ocfg['delta']}")
    write_json(nstar_out, result)


def best_of_n(config: dict, kept: str, draws_files: list[str], fit_file: str, labels_out: str, grid_csv: str,
              grid_png: str, log_dir: str | None = None, threads: int | None = None) -> None:
    import json

    from . import oracle as oracle_mod, oracle_analysis as oa
    from .tp.bon import bon_grid

    ocfg = config["oracle"]
    ns = sorted(set(ocfg["bon"]["n"]))
    draws = _read_draws(draws_files)
    questions = _questions_by_id(kept)
    names = {} if ocfg["labeller"] == oracle_mod.VERIFIER else {"oracle.labeller": ocfg["labeller"]}
    with open_models(config, names, log_dir=log_dir, threads=threads) as models:
        labels = oracle_mod.label_all(draws, questions, config, models, labels_out, max_draw=max(ns))
        _log_stats(models)
    judge_ids = [j.judge_id for j in judging.judges_from_config(config)]
    qs = oa.bon_questions(draws, {r["draw_id"]: r for r in labels}, judge_ids, max(ns))
    fit = json.loads(open(fit_file).read())
    rows = bon_grid(qs, Ns=ns, Js=ocfg["bon"]["j"] or list(range(1, len(judge_ids) + 1)), delta=ocfg["delta"],
                    model_params={"a": fit["a"], "b": fit["b"]} if fit.get("ok") else None)
    write_csv(grid_csv, rows)
    oa.plot_bon(rows, grid_png, f"run {config['run']}: Best-of-N, {len(qs)} questions, oracle={ocfg['labeller']}")
