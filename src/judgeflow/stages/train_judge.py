"""train_judge: one judge of kind trained (a logistic head on its frozen model's hidden states) or
reward_model (Platt scaling of its reward model's score) learns from the oracle's labels of the
calibration split; its out-of-fold P(YES) on every labelled (response, criterion)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from judgeflow.generation.prompting import stable_seed
from judgeflow.judging.calibration import fit_learned_judge, learning_rows
from judgeflow.models import log_stats
from judgeflow.workflow.io import questions_by_id, read_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import JudgeSpec, Settings


def own_judge(settings: Settings, judge_id: str) -> tuple[int, JudgeSpec]:
    """(index, settings) of the job's judge: the one item of judging.judges its view holds (the job
    declares judging.judges[id=<judge>]; the other items are empty, so it asks which items hold an id
    before reading one: a view answers `in`, as a Mapping does)."""
    return next((i, j) for i, j in enumerate(settings.judging.judges)
                if "id" in cast(Mapping, j) and j.id == judge_id)


def run(inp, out, settings: Settings, job: Job) -> None:
    judge_id = job.wildcards["judge"]
    index, spec = own_judge(settings, judge_id)
    rows = learning_rows(read_jsonl(inp.labels), read_jsonl(inp.responses), questions_by_id(inp.calibration),
                         f"judging.judges[{index}]", inp.labels)
    seed = stable_seed(settings.seed, "train_judge", spec.seed) % 2**31  # the judge's folds
    model = settings.models[spec.model]  # validated: an hf model (trained) or a reward model (reward_model)
    if model.backend != "hf" and model.backend != "reward_model":
        raise AssertionError(f"models.{spec.model}: backend {model.backend} (judging.judges[{index}] is {spec.kind})")
    with job.models() as models:
        fit_learned_judge(spec, models[spec.model], model.path, rows,
                          seed=seed, folds=settings.judging.calibration.folds,
                          key=f"judging.judges[{index}]", judge_out=out.judge, head_out=out.head, oof_out=out.oof)
        log_stats(models)
