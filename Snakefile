# judgeflow: clean -> sample -> judge -> refine -> judge refinements -> pairs -> DPO -> evaluation;
# sample until accept -> oracle labels -> TP(N), N*, Best-of-N; one report.
# Run: snakemake --profile profiles/local   (or profiles/slurm on a cluster)
import sys

from snakemake.utils import min_version

min_version("9.0")
sys.path.insert(0, f"{workflow.basedir}/src")
from judgeflow import config as jf_config


configfile: "config/config.yaml"


# First, before any rule is read: snakemake.utils.validate against the schema (fills in
# defaults; errors name the config key), then the cross-field checks.
jf_config.validate(config, f"{workflow.basedir}/config/schema.yaml")
jf_config.check(config)


include: "rules/common.smk"
include: "rules/cluster.smk"
include: "rules/prepare.smk"
include: "rules/clean.smk"
include: "rules/sample.smk"
include: "rules/judge.smk"
include: "rules/refine.smk"
include: "rules/pairs.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/draws.smk"
include: "rules/oracle.smk"
include: "rules/report.smk"


rule all:
    input:
        f"{RESULTS}/pairs/multi_feedback.jsonl",
        f"{RESULTS}/pairs/full_feedback.jsonl",
        f"{RESULTS}/pairs/summary.csv",
        f"{RESULTS}/evaluation/evaluation.json",
        # every table and figure of the report: DPO diagnostics, evaluation, TP(N), Best-of-N
        [f for _, files in report_sections() for f in files],
        f"{RESULTS}/report.html",
