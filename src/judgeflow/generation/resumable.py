"""Resumable generation: finished batches go to a checkpoint before the next one starts."""
from __future__ import annotations

import logging

from judgeflow.models import GenRequest, Model
from judgeflow.workflow.io import Checkpoint

log = logging.getLogger(__name__)


def generate_resumable(model: Model, work: list[tuple[str, GenRequest, dict]], output: str, key: str,
                       desc: str, chunk: int = 64, finish: bool = True) -> list[dict]:
    """Generate for each (id, request, base record) and write records in `work` order to `output`.

    Each record is the base record plus the generation (`text`, `finish_reason`, token counts).
    A rerun after a kill skips ids already in the checkpoint. `finish=False`: no `output` is
    written and the checkpoint stays (an intermediate step whose caller removes it when its own
    output is done): a rerun finds every record of a finished step there.
    """
    ckpt = Checkpoint(output, key=key)
    todo = [w for w in work if w[0] not in ckpt]
    log.info("%s: %d to generate, %d already done", desc, len(todo), len(work) - len(todo))
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        gens = model.generate([w[1] for w in part], desc=desc)
        ckpt.add_many({**base, "text": g.text, "finish_reason": g.finish_reason,
                       "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                       "seed": req.seed, "cached": g.cached}
                      for (_, req, base), g in zip(part, gens))
    return ckpt.finish(output, [w[0] for w in work], write=finish)
