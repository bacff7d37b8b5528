"""prepare_questions: read the question source into judgeflow's question file."""
from __future__ import annotations

import logging

from judgeflow.questions.sources import prepare_questions

log = logging.getLogger(__name__)


def run(inp, out, settings, job) -> None:
    n = prepare_questions(settings["questions"], out.questions)
    log.info("wrote %d questions to %s", n, out.questions)
