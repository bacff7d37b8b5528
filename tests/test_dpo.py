"""DPO training stage: pair loading and checks, config, launch command, diagnostics arithmetic,
and (slow) a few real training steps on the embedded model under `accelerate launch`."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from judgeflow.errors import ConfigError, InputError
from judgeflow.training import diagnostics as diag, dpo
from judgeflow.workflow.settings import Training

from conftest import ROOT, base_config


def _pair(i, prompt="Say hi.", chosen="Hi!", rejected="Go away.", cids=("c1",), rid=None):
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "question_id": f"q{i}",
            "response_id": rid or f"q{i}/r0", "refinement_id": f"q{i}/r0/mf/{cids[0]}", "criterion_ids": list(cids)}


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# ------------------------------------------------------------------------------- pair loading


def test_read_pairs_checks_format_and_names_file_and_line(tmp_path):
    good = _write(tmp_path / "p.jsonl", [_pair(0), _pair(1, cids=("c1", "c2"))])
    pairs = dpo.read_pairs(good)
    assert [p["pair_id"] for p in pairs] == ["q0/r0/mf/c1", "q1/r0/mf/c1"]
    assert pairs[1]["criterion_ids"] == ["c1", "c2"]

    bad_role = _pair(2)
    bad_role["chosen"] = [{"role": "user", "content": "x"}]
    for rows, msg in [
        ([_pair(0), {k: v for k, v in _pair(1).items() if k != "rejected"}], "p.jsonl:2: missing field(s) rejected"),
        ([bad_role], "p.jsonl:1: 'chosen' must end with a 'assistant' message"),
        ([{**_pair(0), "prompt": "plain text"}], "p.jsonl:1: 'prompt' must be a non-empty list"),
        ([_pair(0), _pair(0)], "p.jsonl:2: duplicate pair"),
        (["{not json"], "p.jsonl:1: malformed JSON"),
    ]:
        with pytest.raises(InputError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            dpo.read_pairs(_write(tmp_path / "p.jsonl", rows))


def test_pair_whose_prompt_exceeds_max_length_is_dropped_and_counted(tokenizer):
    long_prompt = "word " * 400
    pairs = [_pair(0), _pair(1, prompt=long_prompt), _pair(2, chosen="ok " * 300)]
    for p in pairs:
        p["pair_id"] = p["refinement_id"]
    n_short = dpo.prompt_token_count(tokenizer, pairs[0]["prompt"])
    assert 5 < n_short < 64
    kept, stats = dpo.filter_by_length(pairs, tokenizer, max_length=128)
    assert [p["question_id"] for p in kept] == ["q0", "q2"]  # dropped, never truncated
    assert stats["dropped_prompt_too_long"] == 1 and stats["dropped_pairs"][0]["pair_id"] == "q1/r0/mf/c1"
    assert stats["dropped_pairs"][0]["prompt_tokens"] >= 128
    assert stats["truncated_completions"] == 1  # q2's chosen is cut by TRL (keep_start), and counted
    assert stats["pairs_read"] == 3 and stats["pairs_used"] == 2
    kept, stats = dpo.filter_by_length(pairs, tokenizer, max_length=None)
    assert len(kept) == 3 and stats["dropped_prompt_too_long"] == 0


def test_token_counts_are_one_chat_template_call(tokenizer):
    p = _pair(0)
    prompt_ids = tokenizer.apply_chat_template(p["prompt"], tokenize=True, add_generation_prompt=True,
                                               return_dict=False)
    assert dpo.chat_token_ids(tokenizer, p["prompt"], add_generation_prompt=True) == list(prompt_ids)
    assert dpo.prompt_token_count(tokenizer, p["prompt"]) == len(prompt_ids)
    full = dpo.chat_token_ids(tokenizer, p["prompt"] + p["chosen"])
    assert full[:len(prompt_ids)] == list(prompt_ids)  # SmolLM2: the prompt is a prefix of prompt+completion
    assert dpo.sequence_token_count(tokenizer, p["prompt"] + p["chosen"]) == len(full) > len(prompt_ids)


@pytest.mark.slow
def test_token_counts_and_length_filter_agree_with_trl_dpo_trainer(tmp_path, model_dir, tokenizer):
    """What filter_by_length counts and drops is what TRL's DPOTrainer tokenizes and drops."""
    import torch
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    pairs = [_pair(0), _pair(1, prompt="word " * 400), _pair(2, chosen="ok " * 300),
             _pair(3, prompt="Name a colour.", chosen="Blue.", rejected="I do not know any colours at all.")]
    for p in pairs:
        p["pair_id"] = p["refinement_id"]
    max_length = 128
    kept, stats = dpo.filter_by_length(pairs, tokenizer, max_length)
    args = DPOConfig(output_dir=str(tmp_path / "out"), max_length=max_length, use_cpu=True, report_to=[],
                     disable_tqdm=True, model_init_kwargs={"dtype": torch.float32})
    trainer = DPOTrainer(model=str(model_dir), args=args, processing_class=tokenizer,
                         train_dataset=dpo.TrainingData(tokenizer, pairs, {}, None).dataset(),
                         peft_config=LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    rows = trainer.train_dataset.to_list()
    assert [r["pair_id"] for r in rows] == [p["pair_id"] for p in kept]  # TRL drops what we drop
    by_id = {p["pair_id"]: p for p in kept}
    truncated = 0
    for r in rows:
        p = by_id[r["pair_id"]]
        assert dpo.prompt_token_count(tokenizer, p["prompt"]) == len(r["prompt_ids"])
        assert dpo.sequence_token_count(tokenizer, p["prompt"] + p["chosen"]) == len(r["prompt_ids"]) + len(
            r["chosen_ids"])
        assert dpo.sequence_token_count(tokenizer, p["prompt"] + p["rejected"]) == len(r["prompt_ids"]) + len(
            r["rejected_ids"])
        truncated += len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) > max_length
    assert stats["truncated_completions"] == truncated == 1


def test_prepare_data_reads_filters_and_checks_the_pair_count(tmp_path, model_dir):
    path = _write(tmp_path / "p.jsonl", [_pair(0), _pair(1, prompt="word " * 400)])
    tcfg = Training(max_length=128, min_pairs=1, on_too_few="error")
    data = dpo.prepare_data(str(path), str(model_dir), tcfg)
    assert data.skip_reason is None and data.tokenizer.pad_token is not None
    assert data.stats["pairs_read"] == 2 and data.stats["pairs_used"] == 1
    assert list(data.meta()) == ["q0/r0/mf/c1"] and data.meta()["q0/r0/mf/c1"]["criterion_ids"] == ["c1"]
    ds = data.dataset()
    assert ds.column_names == ["prompt", "chosen", "rejected", "pair_id"] and len(ds) == 1
    assert ds[0]["prompt"] == _pair(0)["prompt"]
    skip = dpo.prepare_data(str(path), str(model_dir), tcfg.model_copy(update={"min_pairs": 2, "on_too_few": "skip"}))
    assert "1 usable pair(s) (2 read, 1 dropped for length)" in skip.skip_reason
    with pytest.raises(dpo.TooFewPairs):
        dpo.prepare_data(str(path), str(model_dir), tcfg.model_copy(update={"min_pairs": 2}))


def test_too_few_pairs_error_names_file_and_count_or_skips(tmp_path):
    tcfg = Training(min_pairs=4, on_too_few="error")
    with pytest.raises(dpo.TooFewPairs, match=r"pairs/full_feedback.jsonl: 0 usable pair\(s\) \(0 read"):
        dpo.check_pair_count(0, 0, "pairs/full_feedback.jsonl", tcfg)
    with pytest.raises(dpo.TooFewPairs, match=r"3 usable pair\(s\) \(5 read, 2 dropped for length\), fewer than "
                                              r"training.min_pairs=4"):
        dpo.check_pair_count(3, 5, "p.jsonl", tcfg)
    reason = dpo.check_pair_count(1, 1, "p.jsonl", tcfg.model_copy(update={"on_too_few": "skip"}))
    assert "variant skipped" in reason and "1 usable pair(s)" in reason
    assert dpo.check_pair_count(4, 4, "p.jsonl", tcfg) is None


def test_empty_pair_file_skipped_variant_writes_outputs_that_say_so(tmp_path, model_dir):
    cfg = base_config(tmp_path, model_dir, training={"on_too_few": "skip", "min_pairs": 2})
    pairs = _write(tmp_path / "full_feedback.jsonl", [])
    out = dpo.train(dpo.WorkerSettings.from_json(dpo.worker_settings(cfg.typed())), "full_feedback", str(pairs),
                    str(model_dir), str(tmp_path / "dpo"))
    assert out["skipped"]
    summary = json.loads((tmp_path / "dpo" / "summary.json").read_text())
    assert summary["skipped"] and "0 usable pair(s)" in summary["reason"] and str(pairs) in summary["reason"]
    assert (tmp_path / "dpo" / "model" / dpo.SKIPPED_MARKER).exists()
    assert (tmp_path / "dpo" / "train_log.csv").read_text().startswith("step,epoch,loss")


# ------------------------------------------------------------------------------ configuration


def test_training_config_defaults_and_fair_step_budget(tmp_path, model_dir):
    cfg = base_config(tmp_path, model_dir, training={"max_steps": 7})
    kw = dpo.dpo_config_kwargs(Training.model_validate(cfg["training"]), "/tmp/x", 1, use_cpu=True, bf16=False)
    assert kw["max_steps"] == 7 and "num_train_epochs" not in kw  # the same for every variant
    assert kw["loss_type"] == ["sigmoid"] and kw["beta"] == cfg["training"]["beta"]
    assert kw["max_length"] == cfg["training"]["max_length"] and kw["logging_steps"] == 1
    cfg["training"]["max_steps"] = None
    assert "max_steps" not in dpo.dpo_config_kwargs(Training.model_validate(cfg["training"]), "/tmp/x", 1, True,
                                                    False)
    cfg["training"]["extra"] = {"beta": 3}
    with pytest.raises(ConfigError, match=r"training.extra: \['beta'\]"):
        dpo.dpo_config_kwargs(Training.model_validate(cfg["training"]), "/tmp/x", 1, True, False)
    s = dpo.worker_settings(cfg.typed())
    assert s["policy"] == cfg["sampling"]["model"] and s["policy_path"] == str(model_dir)


def test_missing_accelerate_config_names_the_key(tmp_path, model_dir):
    """Checked where the settings are validated (before any rule is read), and by the path helper."""
    with pytest.raises(ConfigError, match=r"training.accelerate_config: accelerate config "
                                          r"'config/accelerate/nope.yaml' not found"):
        base_config(tmp_path, model_dir, training={"accelerate_config": "config/accelerate/nope.yaml"})
    with pytest.raises(ConfigError, match=r"training\.accelerate_config: no accelerate config"):
        base_config(tmp_path, model_dir, training={"accelerate_config": ""})
    with pytest.raises(ConfigError, match=r"training\.accelerate_config: no accelerate config"):
        dpo.accelerate_config_path("", ROOT)
    path = dpo.accelerate_config_path("config/accelerate/zero3.yaml", ROOT)
    assert dpo.deepspeed_stage(dpo.read_accelerate_config(path)) == 3


def test_a_relative_accelerate_config_is_the_working_directorys_else_the_workflows(tmp_path, monkeypatch):
    """One rule, in one helper (the settings check and the rule that launches DPO both call it): a user's
    own config/accelerate/zero3.yaml in the working directory wins over the shipped one."""
    monkeypatch.chdir(tmp_path)
    assert dpo.accelerate_config_path("config/accelerate/zero3.yaml", ROOT) == ROOT / "config/accelerate/zero3.yaml"
    mine = tmp_path / "config/accelerate/zero3.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("distributed_type: NO\n")
    assert dpo.accelerate_config_path("config/accelerate/zero3.yaml", ROOT) == Path("config/accelerate/zero3.yaml")


def test_precompute_ref_log_probs_refused_with_deepspeed(tmp_path, model_dir):
    cfg = base_config(tmp_path, model_dir, training={"precompute_ref_log_probs": True})
    tcfg = Training.model_validate(cfg["training"])
    dpo.check_training_config(tcfg, dpo.read_accelerate_config(ROOT / "config/accelerate/cpu.yaml"))
    for name in ("zero2.yaml", "zero3.yaml"):
        with pytest.raises(ConfigError, match=r"training\.precompute_ref_log_probs: not supported with a DeepSpeed"):
            dpo.check_training_config(tcfg, dpo.read_accelerate_config(ROOT / "config/accelerate" / name))
    # and where the settings are validated, before any rule is read
    with pytest.raises(ConfigError, match=r"training\.precompute_ref_log_probs: not supported with a DeepSpeed"):
        base_config(tmp_path, model_dir, training={"precompute_ref_log_probs": True,
                                                   "accelerate_config": "config/accelerate/zero2.yaml"})


def test_cpu_accelerate_config_refused_on_a_gpu_job():
    cpu = dpo.read_accelerate_config(ROOT / "config/accelerate/cpu.yaml")
    dpo.check_devices(cpu, "cpu.yaml", num_processes=1, cuda_devices=0)
    with pytest.raises(ConfigError, match=r"training.accelerate_config: 'cpu.yaml' trains on one CPU process.*"
                                          r"4 GPU\(s\)"):
        dpo.check_devices(cpu, "cpu.yaml", num_processes=4, cuda_devices=4)
    dpo.check_devices(dpo.read_accelerate_config(ROOT / "config/accelerate/zero3.yaml"), "z", 4, 4)


def test_workflow_stops_on_a_missing_accelerate_config(tmp_path):
    cfgfile = tmp_path / "c.yaml"
    cfgfile.write_text("training: {accelerate_config: config/accelerate/missing.yaml}\n")
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/config.yaml", str(cfgfile),
                        "--cores", "1",
                        "--quiet", "all"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode != 0
    assert "training.accelerate_config: accelerate config 'config/accelerate/missing.yaml' not found" in (
        r.stdout + r.stderr)


# ------------------------------------------------------------------------ diagnostics arithmetic


def test_implicit_rewards_margin_weight_and_loss():
    r = diag.implicit_rewards(-10.0, -20.0, -12.0, -18.0, beta=0.1)
    assert r["reward_chosen"] == pytest.approx(0.2) and r["reward_rejected"] == pytest.approx(-0.2)
    assert r["margin"] == pytest.approx(0.4)
    assert r["weight"] == pytest.approx(1 / (1 + math.exp(0.4)))  # sigma(-margin)
    assert r["loss"] == pytest.approx(-math.log(1 / (1 + math.exp(-0.4))))  # -log sigma(margin)
    start = diag.implicit_rewards(-5.0, -7.0, -5.0, -7.0, beta=0.5)  # pi = pi_ref
    assert start["margin"] == 0 and start["weight"] == 0.5 and start["loss"] == pytest.approx(math.log(2))
    big = diag.implicit_rewards(0.0, -1e5, 0.0, 0.0, beta=1.0)  # stable far out
    assert big["weight"] == pytest.approx(0.0) and big["loss"] == pytest.approx(0.0)
    neg = diag.implicit_rewards(-1e5, 0.0, 0.0, 0.0, beta=1.0)
    assert neg["weight"] == pytest.approx(1.0) and neg["loss"] == pytest.approx(1e5)
    # the weight is the derivative of the loss in the margin: d/dm -log sigma(m) = -sigma(-m)
    eps = 1e-6
    m = 0.7
    assert (-diag.log_sigmoid(m + eps) + diag.log_sigmoid(m - eps)) / (2 * eps) == pytest.approx(-diag.sigmoid(-m))


def test_pair_records_and_summary_rows_per_criterion():
    meta = {"a": {"question_id": "q", "response_id": "q/r0", "criterion_ids": ["c1"]},
            "b": {"question_id": "q", "response_id": "q/r0", "criterion_ids": ["c2"]},
            "c": {"question_id": "p", "response_id": "p/r0", "criterion_ids": ["c1"]}}
    ref = {"a": [-10.0, -10.0], "b": [-10.0, -10.0], "c": [-10.0, -10.0]}
    end = {"a": [-9.0, -11.0], "b": [-11.0, -10.0], "c": [-10.0, -14.0]}  # margins 0.2, -0.1, 0.4 at beta 0.1
    records = diag.pair_records([("start", 0, ref), ("end", 5, end)], ref, meta, beta=0.1, variant="multi_feedback")
    assert len(records) == 6
    e = {r["pair_id"]: r for r in records if r["phase"] == "end"}
    assert e["a"]["margin"] == pytest.approx(0.2) and e["b"]["margin"] == pytest.approx(-0.1)
    assert diag.dpo_loss(list(e.values())) == pytest.approx(
        sum(-diag.log_sigmoid(m) for m in (0.2, -0.1, 0.4)) / 3, abs=1e-5)
    rows = {(r["phase"], r["criterion_id"]): r for r in diag.summary_rows(records)}
    assert rows[("start", diag.ALL)]["weight_mean"] == 0.5 and rows[("start", diag.ALL)]["reward_accuracy"] == 0
    c1 = rows[("end", "c1")]
    assert c1["pairs"] == 2 and c1["margin_mean"] == pytest.approx(0.3)
    assert c1["weight_mean"] == pytest.approx((diag.sigmoid(-0.2) + diag.sigmoid(-0.4)) / 2, abs=1e-5)
    assert rows[("end", "c2")]["reward_accuracy"] == 0.0
    allrow = rows[("end", diag.ALL)]
    assert allrow["reward_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    # q/r0 is pushed down by two pairs (a, b), p/r0 by one: mean over responses of the summed weight
    expect = ((diag.sigmoid(-0.2) + diag.sigmoid(0.1)) + diag.sigmoid(-0.4)) / 2
    assert allrow["rejected_weight_per_response"] == pytest.approx(expect, abs=1e-5)
    assert rows[("start", diag.ALL)]["rejected_weight_per_response"] == pytest.approx(0.75)


def test_phase_store_survives_a_torn_line_and_orders_phases(tmp_path):
    s = diag.PhaseStore(tmp_path / "ph.jsonl")
    s.add("ref", 0, {"a": [1.0, 2.0]})
    s.add("end", 4, {"a": [3.0, 4.0]})
    s.add("start", 0, {"a": [1.0, 2.0]})
    s.add("step2", 2, {"a": [2.0, 3.0]})
    with open(tmp_path / "ph.jsonl", "a") as fh:
        fh.write('{"phase": "step3", "st')  # a killed job's torn write
    again = diag.PhaseStore(tmp_path / "ph.jsonl")
    assert [p[0] for p in again.phases()] == ["start", "step2", "end"]
    assert again.ref() == {"a": [1.0, 2.0]} and "step3" not in again


def test_compare_variants_writes_table_plot_and_training_summary(tmp_path):
    meta = {"a": {"question_id": "q", "response_id": "q/r0", "criterion_ids": ["c1"]}}
    ref = {"a": [-10.0, -10.0]}
    recs = diag.pair_records([("start", 0, ref), ("end", 3, {"a": [-9.0, -12.0]})], ref, meta, 0.1, "multi_feedback")
    d1 = _write(tmp_path / "mf.jsonl", recs)
    d2 = _write(tmp_path / "ff.jsonl", [])
    s1 = tmp_path / "s1.json"
    s1.write_text(json.dumps({"variant": "multi_feedback", "skipped": False, "optimizer_steps": 3}))
    s2 = tmp_path / "s2.json"
    s2.write_text(json.dumps({"variant": "full_feedback", "skipped": True, "reason": "p.jsonl: 0 usable pair(s)"}))
    rows = diag.compare_variants([str(d1), str(d2)], [str(s1), str(s2)], str(tmp_path / "t.csv"),
                                 str(tmp_path / "p.png"), str(tmp_path / "training.csv"), title="t")
    assert {r["phase"] for r in rows} == {"start", "end"}
    assert (tmp_path / "p.png").stat().st_size > 1000
    training = (tmp_path / "training.csv").read_text()
    assert "full_feedback,True" in training and "0 usable pair(s)" in training


# ------------------------------------------------------------------------- real training (slow)


@pytest.mark.slow
def test_train_few_steps_under_accelerate_launch_loss_below_log2_and_model_loads(tmp_path, model_dir):
    """3 LoRA steps on 2 short pairs through the real entry point (accelerate launch, cpu.yaml):
    the DPO loss on the training pairs ends below log 2, the logs/diagnostics are written, the
    saved model loads with the hf backend; a rerun resumes from the kept checkpoint."""
    pairs = _write(tmp_path / "multi_feedback.jsonl", [
        _pair(0, "Reply with the word yes.", "yes", "no, I will not", ("c1",)),
        _pair(1, "Name a colour.", "Blue.", "I do not know any colours at all.", ("c2",)),
    ])
    cfg = base_config(tmp_path, model_dir, training={
        "max_steps": 3, "per_device_train_batch_size": 2, "learning_rate": 5e-4, "beta": 0.1, "min_pairs": 1,
        "lora": {"enabled": True}, "gradient_checkpointing": False, "max_length": 256, "save_steps": 1,
        "keep_checkpoints": True})
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(dpo.worker_settings(cfg.typed())))
    out = tmp_path / "dpo"
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--config_file",
           str(ROOT / "config/accelerate/cpu.yaml"), "--num_processes", "1",
           "-m", "judgeflow.training.worker", "--variant", "multi_feedback", "--pairs", str(pairs),
           "--model", str(model_dir), "--out-dir", str(out), "--threads", "2", "--settings", str(settings)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    old_umask = os.umask(0o022)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    finally:
        os.umask(old_umask)
    assert r.returncode == 0, r.stderr[-3000:]
    # every output honours the umask: safetensors wrote the trained weights 0600 (issue 22)
    modes = {str(f.relative_to(out)): f.stat().st_mode & 0o777 for f in out.rglob("*") if f.is_file()}
    assert modes["model/model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizer_steps"] == 3 and summary["pairs_used"] == 2
    assert summary["final_dpo_loss_on_training_pairs"] < math.log(2)
    log_lines = (out / "train_log.csv").read_text().splitlines()
    assert log_lines[0].startswith("step,epoch,loss,rewards/chosen,rewards/rejected,rewards/margins,"
                                   "rewards/accuracies") and len(log_lines) == 4
    records = [json.loads(l) for l in (out / "diagnostics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in records} == {"start", "end"}
    assert all(r["weight"] == 0.5 for r in records if r["phase"] == "start")
    end = [r for r in records if r["phase"] == "end"]
    assert diag.dpo_loss(end) == pytest.approx(summary["final_dpo_loss_on_training_pairs"], abs=1e-5)
    assert all(r["weight"] < 0.5 for r in end)

    from judgeflow.models import GenRequest, Sampling
    from judgeflow.models.hf import HFModel

    m = HFModel("trained", str(out / "model"), device="cpu", batch_size=2, threads=2)
    g = m.generate([GenRequest.chat("Name a colour.", sampling=Sampling(max_new_tokens=4))])[0]
    assert g.completion_tokens >= 1

    # killed-and-rerun: the same job finds its checkpoint and resumes (nothing left to train)
    assert (out / "checkpoints" / "checkpoint-3").is_dir() or (out / "checkpoints" / "checkpoint-2").is_dir()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((out / "summary.json").read_text())
    assert again["resumed_from"] and "checkpoint-" in again["resumed_from"]
    assert again["optimizer_steps"] == 3


def test_resume_only_from_checkpoints_of_the_same_job(tmp_path):
    ck = tmp_path / "checkpoints"
    assert dpo.resumable_checkpoint(ck, "abc") == (None, False)
    (ck / "checkpoint-2").mkdir(parents=True)
    (ck / "checkpoint-4").mkdir()
    assert dpo.resumable_checkpoint(ck, "abc") == (None, True)  # no stamp: not ours
    (ck / "fingerprint.txt").write_text("abc\n")
    assert dpo.resumable_checkpoint(ck, "abc") == (str(ck / "checkpoint-4"), False)
    assert dpo.resumable_checkpoint(ck, "other") == (None, True)  # config or data changed: start over
    pairs = _write(tmp_path / "p.jsonl", [_pair(0)])
    def ws(beta):
        return dpo.WorkerSettings(Training(beta=beta), seed=1, policy="smollm2", policy_path=str(tmp_path))

    fp = dpo.fingerprint(ws(0.1), str(pairs), str(tmp_path))
    assert fp == dpo.fingerprint(ws(0.1), str(pairs), str(tmp_path))
    assert fp != dpo.fingerprint(ws(0.2), str(pairs), str(tmp_path))
    assert fp != dpo.fingerprint(ws(0.1), str(pairs), str(tmp_path), job="other-job")
    _write(pairs, [_pair(1)])
    assert fp != dpo.fingerprint(ws(0.1), str(pairs), str(tmp_path))


class _Rank:
    """accelerate's PartialState as prepare_checkpoints uses it; records the checkpoint directory's
    entries at each barrier."""

    def __init__(self, ckpt: Path, is_main: bool):
        self.ckpt, self.is_main_process, self.at_barrier = ckpt, is_main, []

    def wait_for_everyone(self):
        self.at_barrier.append(sorted(p.name for p in self.ckpt.iterdir()) if self.ckpt.exists() else None)


def test_prepare_checkpoints_every_rank_decides_before_the_main_one_cleans_up(tmp_path):
    ck = tmp_path / "checkpoints"
    (ck / "checkpoint-2").mkdir(parents=True)
    (ck / "fingerprint.txt").write_text("old\n")
    other = _Rank(ck, is_main=False)
    assert dpo.prepare_checkpoints(other, ck, "new") is None
    assert other.at_barrier == [["checkpoint-2", "fingerprint.txt"]] * 2  # another rank touches nothing
    assert (ck / "fingerprint.txt").read_text() == "old\n"

    main = _Rank(ck, is_main=True)
    assert dpo.prepare_checkpoints(main, ck, "new") is None
    assert main.at_barrier == [["checkpoint-2", "fingerprint.txt"], ["fingerprint.txt"]]  # stale: removed after
    assert (ck / "fingerprint.txt").read_text() == "new\n"  # stamped for this job

    (ck / "checkpoint-3").mkdir()
    again = _Rank(ck, is_main=True)
    assert dpo.prepare_checkpoints(again, ck, "new") == str(ck / "checkpoint-3")  # the same job: resumed
    assert again.at_barrier == [["checkpoint-3", "fingerprint.txt"]] * 2

    fresh = tmp_path / "fresh" / "checkpoints"
    assert dpo.prepare_checkpoints(_Rank(fresh, is_main=True), fresh, "fp") is None
    assert (fresh / "fingerprint.txt").read_text() == "fp\n"


def test_training_hooks_follow_the_trainer_callback_protocol(tmp_path, monkeypatch):
    from transformers import TrainerCallback, TrainerControl, TrainerState
    from transformers.trainer_callback import CallbackHandler

    calls = []

    def fake_pair_logps(trainer, batch_size=8, ref=False):
        calls.append((trainer, batch_size, ref))
        return {"a": [-1.0, -2.0] if ref else [-0.5, -2.5]}

    monkeypatch.setattr(diag, "pair_logps", fake_pair_logps)
    path = tmp_path / "phases.jsonl"
    hooks = dpo.TrainingHooks("the trainer", diag.PhaseStore(path), batch_size=4, every_steps=2,
                              keep_checkpoints=False, is_main=True)
    handler = CallbackHandler([hooks], None, None, None, None)
    state, control = TrainerState(max_steps=4), TrainerControl()
    handler.on_train_begin(None, state, control)
    assert calls == [("the trainer", 4, True)]  # the reference, once; the start is the reference
    assert hooks.store.ref() == {"a": [-1.0, -2.0]} and "start" in hooks.store

    state.global_step = 1
    for event in (n for n in dir(TrainerCallback) if n.startswith("on_")):  # every event is handled
        handler.call_event(event, None, state, control, metrics={}, logs={"loss": 0.5})
    with pytest.raises(AttributeError):
        hooks.not_an_event  # noqa: B018

    for step in (2, 3, 4):
        state.global_step = step
        handler.on_step_begin(None, state, control)
        control.should_save = True  # as DefaultFlowCallback asks at save_steps: 1
        handler.on_step_end(None, state, control)
        assert control.should_save == (step < 4)  # the last step: the model is saved whole instead
    assert [c[2] for c in calls] == [True, False]  # step 2 recorded; not step 4 (the end is recorded by train)
    assert [p[0] for p in diag.PhaseStore(path).phases()] == ["start", "step2"]
    assert len(hooks.step_seconds) == 4 and all(s >= 0 for s in hooks.step_seconds)

    # a resumed job: what the store holds is not measured again
    resumed = dpo.TrainingHooks("t", diag.PhaseStore(path), batch_size=4, every_steps=2, keep_checkpoints=True,
                                is_main=True)
    state.global_step = 2
    CallbackHandler([resumed], None, None, None, None).on_train_begin(None, state, control)
    assert len(calls) == 2


def test_training_summary_keys_rounding_and_empty_timings():
    stats = {"pairs_read": 3, "dropped_prompt_too_long": 1, "dropped_pairs": [{"pair_id": "x", "prompt_tokens": 9}],
             "truncated_completions": 0, "pairs_used": 2, "max_length": 8}
    kw = {"optimizer_steps": 3, "epoch": 1.49999, "pairs_per_step": 4, "resumed_from": None, "num_processes": 1,
          "accelerate_config": "cpu.yaml", "bf16": False, "lora": True, "train_loss": 0.69314718,
          "end_loss": 0.1234567, "step_seconds": [0.3, 0.1, 0.2], "train_seconds": 12.34,
          "total_seconds": 20.06, "peak_rss_mb": 1000.04, "peak_gpu_mem_mb": None}
    s = dpo.training_summary("multi_feedback", stats, **kw)
    assert list(s) == ["variant", "skipped", *stats, "optimizer_steps", "pairs_per_step", "epochs", "resumed_from",
                       "num_processes", "accelerate_config", "bf16", "lora", "train_loss_logged_mean",
                       "final_dpo_loss_on_training_pairs", "seconds_per_step_median", "seconds_per_step_mean",
                       "train_seconds", "total_seconds", "peak_rss_mb", "peak_gpu_mem_mb"]
    assert s["variant"] == "multi_feedback" and s["skipped"] is False and s["dropped_pairs"] == stats["dropped_pairs"]
    assert s["epochs"] == 1.5 and s["train_loss_logged_mean"] == 0.693147
    assert s["final_dpo_loss_on_training_pairs"] == 0.123457
    assert s["seconds_per_step_median"] == 0.2 and s["seconds_per_step_mean"] == 0.2
    assert s["train_seconds"] == 12.3 and s["total_seconds"] == 20.1 and s["peak_rss_mb"] == 1000.0
    assert s["peak_gpu_mem_mb"] is None
    # everything the dpo_diagnostics table reads (logs: added by train(), which knows training.report_to)
    assert set(diag.TRAINING_COLUMNS) - {"reason", "logs"} <= set(s)
    empty = dpo.training_summary("v", stats, **{**kw, "epoch": None, "end_loss": None, "step_seconds": [],
                                                "peak_gpu_mem_mb": 2047.96})
    assert empty["epochs"] == 0 and empty["final_dpo_loss_on_training_pairs"] is None
    assert empty["seconds_per_step_median"] is None and empty["seconds_per_step_mean"] is None
    assert empty["peak_gpu_mem_mb"] == 2048.0


def test_importing_dpo_does_not_import_torch_or_transformers():
    """The Snakefile imports judgeflow.training.dpo to check the config: it must stay cheap."""
    code = "import sys, judgeflow.training.dpo; print(sorted({'torch', 'transformers', 'trl'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


# ------------------------------------------------------------------- SPaR's DPO: a loss with an SFT term


@pytest.mark.parametrize("loss_type, weights, message", [
    (["sigmoid", "sfft"], None, r"training.loss_type\[1\]: 'sfft' is no loss of TRL's DPOTrainer \(did you mean 'sft'"),
    (["sigmoid", "sft"], [1.0], r"training.loss_weights: 1 weights for 2 losses"),
    (["sigmoid", "sft"], [1.0, -0.1], r"training.loss_weights: .* negative weight"),
    (["sigmoid", "sigmoid"], None, r"training.loss_type: .* names a loss twice"),
    ([], None, r"training.loss_type: an empty list")])
def test_bad_losses_name_the_key(tmp_path, model_dir, loss_type, weights, message):
    with pytest.raises(ConfigError, match=message):
        base_config(tmp_path, model_dir, training={"loss_type": loss_type, "loss_weights": weights})


def test_spar_dpo_with_an_sft_term_adds_its_weighted_nll_to_the_dpo_loss(tmp_path, model_dir):
    """SPaR's DPO (pref_ftx 0.1) as TRL takes it: loss_type [sigmoid, sft], loss_weights [1.0, 0.1]. One step
    of the real trainer on the embedded model, learning rate ~0 so the first logged loss is at the start:
    sigmoid alone is log 2 (policy = reference), sft alone the chosen responses' NLL s > 0, and the two
    weighted give log 2 + 0.1 s."""
    pairs = _write(tmp_path / "pairs.jsonl", [_pair(0, "Reply with the word yes.", "yes", "no, I will not", ("c1",))])

    def first_loss(name: str, loss_type, weights) -> float:
        cfg = base_config(tmp_path / name, model_dir, training={
            "max_steps": 1, "per_device_train_batch_size": 1, "learning_rate": 1e-12, "min_pairs": 1,
            "lora": {"enabled": True}, "gradient_checkpointing": False, "max_length": 128, "save_steps": 1,
            "loss_type": loss_type, "loss_weights": weights})
        kw = dpo.dpo_config_kwargs(cfg.typed().training, "/tmp/x", 1, use_cpu=True, bf16=False)
        assert kw["loss_type"] == (loss_type if isinstance(loss_type, list) else [loss_type])
        assert kw.get("loss_weights") == weights
        out = tmp_path / name / "dpo"
        dpo.train(dpo.WorkerSettings.from_json(dpo.worker_settings(cfg.typed())), "multi_feedback", str(pairs),
                  str(model_dir), str(out))
        header, first = (tmp_path / name / "dpo" / "train_log.csv").read_text().splitlines()[:2]
        return float(dict(zip(header.split(","), first.split(",")))["loss"])

    plain = first_loss("plain", "sigmoid", None)
    sft = first_loss("sft", ["sft"], None)
    both = first_loss("both", ["sigmoid", "sft"], [1.0, 0.1])
    assert plain == pytest.approx(math.log(2), abs=1e-3) and sft > 0.1
    assert both == pytest.approx(plain + 0.1 * sft, rel=1e-3)


# ------------------------------------------------------------------------------------- training logs


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the scalars in a folder's TensorBoard event files (TFRecord: length, its crc,
    the Event proto, its crc), read with the protobuf classes tensorboardX ships."""
    import struct

    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    for f in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = f.read_bytes(), 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def test_tensorboard_event_files_hold_the_logged_losses_and_none_writes_nothing(tmp_path, model_dir):
    """training.report_to: tensorboard (the default): the variant's logs/tensorboard/ holds event files whose
    train/loss per step is the loss of train_log.csv; the summary and dpo_diagnostics' training.csv name the
    folder. none: logs/ stays empty. wandb without the package: a config error naming the key."""
    pairs = _write(tmp_path / "pairs.jsonl", [_pair(0, "Reply with the word yes.", "yes", "no, I will not", ("c1",)),
                                              _pair(1, "Name a colour.", "Blue.", "I do not know.", ("c2",))])

    def run(name: str, report_to: str) -> Path:
        cfg = base_config(tmp_path / name, model_dir, training={
            "max_steps": 2, "per_device_train_batch_size": 1, "learning_rate": 1e-4, "min_pairs": 1,
            "lora": {"enabled": True}, "gradient_checkpointing": False, "max_length": 128, "save_steps": 1,
            "report_to": report_to})
        out = tmp_path / name / "dpo"
        dpo.train(dpo.WorkerSettings.from_json(dpo.worker_settings(cfg.typed())), "multi_feedback", str(pairs),
                  str(model_dir), str(out))
        return out

    out = run("board", "tensorboard")
    scalars = tensorboard_scalars(out / "logs" / "tensorboard")
    header, *rows = (out / "train_log.csv").read_text().splitlines()
    logged = {int(r["step"]): float(r["loss"]) for r in (dict(zip(header.split(","), x.split(","))) for x in rows)}
    assert set(logged) == {1, 2} and scalars["train/loss"] == pytest.approx(logged, rel=1e-5)
    assert json.loads((out / "summary.json").read_text())["logs"] == "logs/tensorboard"
    training_csv = tmp_path / "training.csv"
    diag.compare_variants([str(out / "diagnostics.jsonl")], [str(out / "summary.json")], str(tmp_path / "t.csv"),
                          str(tmp_path / "p.png"), str(training_csv))
    assert str(out / "logs" / "tensorboard") in training_csv.read_text()
    quiet = run("quiet", "none")
    assert (quiet / "logs").is_dir() and not any((quiet / "logs").iterdir())
    assert json.loads((quiet / "summary.json").read_text())["logs"] is None
    with pytest.raises(ConfigError, match=r"training\.report_to: 'wandb' needs the wandb package"):
        base_config(tmp_path / "w", model_dir, training={"report_to": "wandb"})
