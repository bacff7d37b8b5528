"""label_calibration: the oracle (`oracle.labeller`) labels the calibration responses per (response,
criterion): calibration/labels.jsonl, each record naming its oracle (judgeflow.judging.calibration).

The exact verifier is free: every (response, instruction criterion) is labelled, generic criteria are
not (no verifier), and the stage reads no setting. An LLM oracle (a models key) is asked once per
(response, criterion), generic criteria included, through the model's API cache (a rerun pays nothing
twice), at most `judging.calibration.budget` times: past it, whole responses of a seeded random subset
(`seed`) are labelled and the others left unlabelled. An abstention gives no record."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from judgeflow.judging.calibration import label_with_oracle, label_with_verifier
from judgeflow.models import log_stats
from judgeflow.workflow.io import questions_by_id, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Mapping

    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings

log = logging.getLogger(__name__)


def run(inp, out, settings: Settings, job: Job) -> None:
    responses, questions = read_jsonl(inp.responses), questions_by_id(inp.calibration)
    # the oracle settings are declared only with an LLM oracle (judgeflow.workflow.pipeline: the verifier reads
    # none), and the stage's view (pipeline.Declared, a mapping) holds exactly the sections it declares
    if "oracle" not in cast("Mapping[str, object]", settings):
        labels = label_with_verifier(responses, questions, inp.responses)
    else:
        with job.models() as models:
            labels = label_with_oracle(responses, questions, settings.judging, settings.oracle, settings.seed, models,
                                       inp.responses)
            log_stats(models)
    write_jsonl(out.labels, labels)
