# Shared paths. Everything a rule asks for (params, inputs, resources) comes from one provider,
# JF = judgeflow.workflow.rulekit.Rules(config), filled from each stage's declaration (judgeflow.workflow.pipeline):
# per rule, S = JF.stage("<rule>") just above it. A result path is spelled once, in its rule's output:.
from pathlib import Path

RUN = JF.run
RESULTS = JF.results
LOGS = JF.logs
BENCH = JF.bench
MODELS_DIR = JF.models_dir
STAGE_SCRIPT = "../workflow/scripts/stage.py"
REPORT_DIR = "../workflow/report"  # captions of the outputs marked report(): snakemake --report report.zip


wildcard_constraints:
    shard=r"\d+",
    seed=r"\d+",  # a replicate's seed (`replicates`): results/<run>/seed-<s>/
