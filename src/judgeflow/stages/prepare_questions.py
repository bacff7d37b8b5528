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
    questions = settings.questions
    # a jsonl or hf_dataset question may come without criteria of its own: judged on judging.generic_criteria
    # alone, or an error where there are none; judging.holistic_criterion, where set, is such a question's
    # one criterion (ifbench and composed questions always carry their instructions)
    own = questions.source in ("jsonl", "hf_dataset")
    generic = bool(settings.judging.generic_criteria) if own else None
    holistic = settings.judging.holistic_criterion if own else None
    n = prepare_questions(questions, out.questions, generic_criteria=generic, holistic=holistic)
    log.info("wrote %d questions to %s", n, out.questions)
