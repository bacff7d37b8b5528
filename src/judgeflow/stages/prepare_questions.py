"""prepare_questions: read the question source into judgeflow's question file."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from judgeflow.questions.sources import prepare_questions

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings

log = logging.getLogger(__name__)


def run(inp, out, settings: Settings, job: Job) -> None:
    n = prepare_questions(settings.questions, out.questions)
    log.info("wrote %d questions to %s", n, out.questions)
