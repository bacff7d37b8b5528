# judgeflow: clean -> sample -> judge -> refine -> judge refinements -> pairs.
# Run: snakemake --profile profiles/local   (or profiles/slurm on a cluster)
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")  # first, before any rule is read; fills in defaults


include: "rules/common.smk"
include: "rules/prepare.smk"
include: "rules/clean.smk"
include: "rules/sample.smk"
include: "rules/judge.smk"
include: "rules/refine.smk"
include: "rules/pairs.smk"


rule all:
    input:
        f"{RESULTS}/pairs/multi_feedback.jsonl",
        f"{RESULTS}/pairs/full_feedback.jsonl",
        f"{RESULTS}/pairs/summary.csv",
