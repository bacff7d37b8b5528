# DPO on each pair dataset (train_dpo, one job per variant: multi_feedback, full_feedback) and the
# gradient-weight diagnostics comparing them (dpo_diagnostics). Logic: src/judgeflow/training/dpo.py,
# src/judgeflow/stages/train_dpo.py (the accelerate launch), src/judgeflow/training/diagnostics.py.
from judgeflow.training import dpo as jf_dpo
from judgeflow.workflow.pipeline import relpath_if_below

# The accelerate config (training.accelerate_config: the working directory's, else the workflow's, by
# the one rule of jf_dpo.accelerate_config_path; judgeflow.workflow.settings has checked it against the
# training settings).
DPO_ACCELERATE_CONFIG = relpath_if_below(
    jf_dpo.accelerate_config_path(
        config["training"]["accelerate_config"], workflow.basedir
    )
)


wildcard_constraints:
    variant=jf_dpo.VARIANT_PATTERN,


S = JF.stage("train_dpo")


rule train_dpo:
    """DPO (TRL DPOTrainer under accelerate launch) of the policy on one pair dataset, the same
    optimizer-step budget for every variant; resumes from its last checkpoint when rerun.
    """
    input:
        unpack(S.inputs),
        unpack(JF.variant_pairs),
        accelerate_config=DPO_ACCELERATE_CONFIG,
    output:
        model=directory(f"{RESULTS}/dpo/{{variant}}/model"),
        train_log=f"{RESULTS}/dpo/{{variant}}/train_log.csv",
        diagnostics=f"{RESULTS}/dpo/{{variant}}/diagnostics.jsonl",
        summary=f"{RESULTS}/dpo/{{variant}}/summary.json",
        logs=directory(f"{RESULTS}/dpo/{{variant}}/logs"),  # training.report_to: tensorboard/, wandb/
    log:
        f"{LOGS}/train_dpo/{{variant}}.log",
    benchmark:
        f"{BENCH}/train_dpo/{{variant}}.tsv"
    priority: 1
    localrule: S.local
    conda:
        S.conda
    threads: S.threads
    resources:
        **S.resources,
        gpu=0,  # GPUs of the job (SLURM profile: set-resources); 0 = one CPU process
    params:
        **S.params,
    script:
        STAGE_SCRIPT


S = JF.stage("dpo_diagnostics")


rule dpo_diagnostics:
    """Per-pair implicit reward margins and sigmoid weights at the start and end of training,
    per variant and criterion (table) and a plot comparing the variants; a training summary.
    """
    input:
        diagnostics=JF.variant_files(rules.train_dpo.output.diagnostics),
        summaries=JF.variant_files(rules.train_dpo.output.summary),
    output:
        table=f"{RESULTS}/dpo/diagnostics.csv",
        plot=report(
            f"{RESULTS}/dpo/diagnostics.png",
            caption=f"{REPORT_DIR}/dpo_diagnostics.rst",
            category="Training",
        ),
        training=f"{RESULTS}/dpo/training.csv",
    log:
        f"{LOGS}/dpo_diagnostics/dpo_diagnostics.log",
    benchmark:
        f"{BENCH}/dpo_diagnostics/dpo_diagnostics.tsv"
    localrule: S.local
    conda:
        S.conda
    params:
        **S.params,
    script:
        STAGE_SCRIPT
