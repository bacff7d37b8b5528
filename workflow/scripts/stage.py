# The entry point of every `script:` rule: the rule's stage (judgeflow.pipeline.STAGES[rule]) runs
# on the rule's named inputs and outputs and exactly the settings it declares.
from judgeflow import smk

smk.run(snakemake)  # noqa: F821 - Snakemake defines it
