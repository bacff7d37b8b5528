# DPO on each pair dataset (train_dpo, one job per variant: multi_feedback, full_feedback) and the
# gradient-weight diagnostics comparing them (dpo_diagnostics). Logic: src/judgeflow/dpo.py,
# src/judgeflow/dpo_diagnostics.py.
import json as _json
import sys as _sys

from snakemake.settings.types import DeploymentMethod as _DeploymentMethod

from judgeflow import dpo as jf_dpo

DPO_VARIANTS = list(config["training"]["variants"])
# Checked here, before any job runs: a missing accelerate config, precompute_ref_log_probs with
# DeepSpeed, a policy that is not a local hf model -- each error names its config key.
DPO_ACCELERATE_CONFIG = str(jf_dpo.accelerate_config_path(config, "."
    if Path(config["training"]["accelerate_config"]).exists() else workflow.basedir))
jf_dpo.check_training_config(config, jf_dpo.read_accelerate_config(DPO_ACCELERATE_CONFIG))
DPO_POLICY_PATH = jf_dpo.policy_model_path(config)


wildcard_constraints:
    variant="|".join(jf_dpo.VARIANTS),


localrules:
    dpo_diagnostics,


def dpo_command():
    """The train_dpo shell command (one small function: swap in a multi-node launcher here)."""
    with_conda = _DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    script = f"{workflow.basedir}/workflow/scripts/train_dpo.py"
    args = ["--variant", "{wildcards.variant}", "--pairs", "{input.pairs}", "--model", "{params.model_path}",
            "--out-dir", "{params.out_dir}", "--accelerate-config", "{input.accelerate_config}",
            "--threads", "{threads}"]
    launch = jf_dpo.launch_command(script, args, conda=with_conda, python=_sys.executable)
    return "export JUDGEFLOW_TRAIN_SETTINGS={params.settings:q}; " + launch + " > {log} 2>&1"


def dpo_outputs(name, variants=None):
    return expand(f"{RESULTS}/dpo/{{variant}}/{name}", variant=variants or DPO_VARIANTS)


rule train_dpo:
    """DPO (TRL DPOTrainer under accelerate launch) of the policy on one pair dataset, the same
    optimizer-step budget for every variant; resumes from its last checkpoint when rerun."""
    input:
        pairs=f"{RESULTS}/pairs/{{variant}}.jsonl",
        models=model_dirs(jf_dpo.policy_model_name(config)),
        accelerate_config=DPO_ACCELERATE_CONFIG,
    output:
        model=directory(f"{RESULTS}/dpo/{{variant}}/model"),
        train_log=f"{RESULTS}/dpo/{{variant}}/train_log.csv",
        diagnostics=f"{RESULTS}/dpo/{{variant}}/diagnostics.jsonl",
        summary=f"{RESULTS}/dpo/{{variant}}/summary.json",
    params:
        settings=lambda wc: _json.dumps(jf_dpo.settings(config), sort_keys=True),
        model_path=DPO_POLICY_PATH,
        out_dir=lambda wc: f"{RESULTS}/dpo/{wc.variant}",
    log:
        f"{LOGS}/train_dpo/{{variant}}.log",
    benchmark:
        f"{BENCH}/train_dpo/{{variant}}.tsv"
    threads: rule_threads("train_dpo")
    resources:
        mem_mb=rule_mem("train_dpo"),
        runtime=rule_runtime("train_dpo"),
        gpu=0,  # GPUs of the job (SLURM profile: set-resources); 0 = one CPU process
    conda:
        "../envs/training.yaml"
    shell:
        dpo_command()


rule dpo_diagnostics:
    """Per-pair implicit reward margins and sigmoid weights at the start and end of training,
    per variant and criterion (table) and a plot comparing the variants; a training summary."""
    input:
        diagnostics=dpo_outputs("diagnostics.jsonl"),
        summaries=dpo_outputs("summary.json"),
    output:
        table=f"{RESULTS}/dpo/diagnostics.csv",
        plot=f"{RESULTS}/dpo/diagnostics.png",
        training=f"{RESULTS}/dpo/training.csv",
    params:
        variants=DPO_VARIANTS,
        run=RUN,
    log:
        f"{LOGS}/dpo_diagnostics/dpo_diagnostics.log",
    benchmark:
        f"{BENCH}/dpo_diagnostics/dpo_diagnostics.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/dpo_diagnostics.py"


if "REPORT_EXTRA" in globals():
    REPORT_EXTRA.append(("DPO training: gradient weights per pair",
                         [f"{RESULTS}/dpo/diagnostics.png", f"{RESULTS}/dpo/training.csv",
                          f"{RESULTS}/dpo/diagnostics.csv"]))
