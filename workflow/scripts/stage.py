# The entry point of every `script:` rule: the rule's stage (judgeflow.workflow.pipeline.STAGES[rule]) runs
# on the rule's named inputs and outputs and exactly the settings it declares.
import sys
from pathlib import Path

# this workflow's own package first (the code its `code` param digests), whatever else is installed
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from judgeflow.workflow import smk

smk.run(snakemake)
