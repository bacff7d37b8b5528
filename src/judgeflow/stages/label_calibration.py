"""label_calibration: the oracle labels every (calibration response, criterion). The oracle is the exact
verifier (settings refuse a calibration split with an LLM labeller): free, so every pair is labelled."""
from __future__ import annotations

import logging

from ..calibration import label_with_verifier
from ..io import questions_by_id, read_jsonl, write_jsonl

log = logging.getLogger(__name__)


def run(inp, out, settings, job) -> None:
    labels = label_with_verifier(read_jsonl(inp.responses), questions_by_id(inp.calibration), inp.responses)
    write_jsonl(out.labels, labels)
