"""prepare_model: de-quantize a GGUF shipped in a PyPI package into a transformers directory."""
from __future__ import annotations

from judgeflow.models.convert import gguf_to_safetensors


def run(inp, out, settings, job) -> None:
    name = job.wildcards["model"]
    spec = settings["prepare"]["models"][name]
    gguf_to_safetensors(spec["gguf_package"], spec["gguf_file"], out.model, key=f"prepare.models.{name}")
