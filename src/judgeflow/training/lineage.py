"""Which model a trained directory stands for (a self-play round's actor or refiner), without importing the
training stack: the stages that load a round's models (sample_round, tree_search, judge_round) import this
alone, so an edit to the DPO or SFT code does not rerun them."""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def actor_of(model_dir: str) -> str:
    """The model a trained directory stands for: itself, or -- where its training was skipped (too few
    pairs) -- the model that training would have started from (its summary's `start`)."""
    summary = Path(model_dir).parent / "summary.json"
    if summary.exists():
        with open(summary) as fh:
            s = json.load(fh)
        if s.get("skipped") and s.get("start"):
            log.warning("%s: training was skipped (%s); using the model it would have started from, %s",
                        model_dir, s.get("reason"), s["start"])
            return s["start"]
    return str(model_dir)
