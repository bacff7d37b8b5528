"""Every accelerate config under config/ loads with accelerate, and every DeepSpeed config in it is
accepted by DeepSpeed's own config parser (no GPU needed): the accelerate `deepspeed_config` keys
are turned into the DeepSpeed dict the way accelerate does it (DeepSpeedPlugin + mixed
precision), the "auto" values are filled the way the Trainer does it from the DPOConfig the
workflow builds, and the result goes through deepspeed.runtime.config.DeepSpeedConfig."""
from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import yaml

from judgeflow.training import dpo
from judgeflow.workflow.settings import Training

from conftest import ROOT, base_config

ACCELERATE_CONFIGS = sorted((ROOT / "config").rglob("*.yaml"))
ACCELERATE_CONFIGS = [p for p in ACCELERATE_CONFIGS if "distributed_type" in (yaml.safe_load(p.read_text()) or {})]
DEEPSPEED_YAML = [p for p in ACCELERATE_CONFIGS if yaml.safe_load(p.read_text())["distributed_type"] == "DEEPSPEED"]


def test_shipped_configs_are_found():
    names = {p.name for p in ACCELERATE_CONFIGS}
    assert {"cpu.yaml", "zero2.yaml", "zero3.yaml"} <= names
    assert {p.name for p in DEEPSPEED_YAML} >= {"zero2.yaml", "zero3.yaml"}


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_accelerate_loads_it(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.num_machines == 1  # single node; multi-node goes through judgeflow.workflow.launch
    if path.name == "cpu.yaml":
        assert cfg.use_cpu and str(cfg.distributed_type) in ("NO", "DistributedType.NO")
        assert cfg.mixed_precision == "no"


def _deepspeed_dict(acc: dict) -> dict:
    """The DeepSpeed config accelerate builds from an accelerate config's deepspeed_config keys."""
    from accelerate.utils import DeepSpeedPlugin

    ds = acc["deepspeed_config"]
    if ds.get("deepspeed_config_file"):
        return json.loads(Path(ROOT, ds["deepspeed_config_file"]).read_text())
    plugin = DeepSpeedPlugin(
        zero_stage=ds["zero_stage"], gradient_accumulation_steps=ds.get("gradient_accumulation_steps", "auto"),
        gradient_clipping=ds.get("gradient_clipping", "auto"),
        offload_optimizer_device=ds.get("offload_optimizer_device"),
        offload_param_device=ds.get("offload_param_device"), zero3_init_flag=ds.get("zero3_init_flag"),
        zero3_save_16bit_model=ds.get("zero3_save_16bit_model"))
    out = dict(plugin.deepspeed_config)
    if acc.get("mixed_precision") == "bf16":
        out["bf16"] = {"enabled": True}
    elif acc.get("mixed_precision") == "fp16":
        out["fp16"] = {"enabled": True}
    return out


def _parse_with_deepspeed(ds: dict, tmp_path, model_dir, bf16: bool):
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import AutoConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig
    from trl import DPOConfig

    cfg = base_config(tmp_path, model_dir, training={"per_device_train_batch_size": 2,
                                                     "gradient_accumulation_steps": 4, "max_steps": 10})
    tcfg = Training.model_validate(cfg["training"])
    args = DPOConfig(**dpo.dpo_config_kwargs(tcfg, str(tmp_path / "out"), 0, use_cpu=True, bf16=bf16))
    hf = HfTrainerDeepSpeedConfig(ds)
    hf.trainer_config_process(args)
    hf.trainer_config_finalize(args, types.SimpleNamespace(config=AutoConfig.from_pretrained(model_dir)), 10)
    return DeepSpeedConfig(hf.config)


@pytest.mark.parametrize("path", DEEPSPEED_YAML, ids=lambda p: p.name)
def test_deepspeed_accepts_config(path, tmp_path, model_dir):
    acc = yaml.safe_load(path.read_text())
    assert acc["mixed_precision"] == "bf16" and acc["num_machines"] == 1
    ds = _deepspeed_dict(acc)
    parsed = _parse_with_deepspeed(ds, tmp_path, model_dir, bf16=True)
    stage = acc["deepspeed_config"]["zero_stage"]
    assert parsed.zero_optimization_stage == stage
    assert parsed.train_micro_batch_size_per_gpu == 2 and parsed.gradient_accumulation_steps == 4
    assert parsed.bfloat16_config.enabled
    if stage == 3:
        # the reference model must come from from_pretrained under ZeRO-3 init; the saved model is 16-bit
        assert acc["deepspeed_config"]["zero3_init_flag"] and acc["deepspeed_config"]["zero3_save_16bit_model"]
        assert parsed.zero_config.gather_16bit_weights_on_model_save


def test_deepspeed_parser_rejects_a_bad_config(tmp_path, model_dir):
    """The check has teeth: an unknown ZeRO key fails DeepSpeed's parser."""
    acc = yaml.safe_load((ROOT / "config/accelerate/zero2.yaml").read_text())
    ds = _deepspeed_dict(acc)
    ds["zero_optimization"] = {**ds["zero_optimization"], "not_a_zero_key": 1}
    with pytest.raises(Exception, match="not_a_zero_key"):
        _parse_with_deepspeed(ds, tmp_path, model_dir, bf16=True)
