"""prepare_model: de-quantize a GGUF shipped in a PyPI package into a transformers directory."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.models.convert import gguf_to_safetensors

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    name = job.wildcards["model"]
    spec = settings.prepare.models[name]
    gguf_to_safetensors(spec.gguf_package, spec.gguf_file, out.model, key=f"prepare.models.{name}")
