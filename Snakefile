# judgeflow: clean -> sample -> judge -> refine (single, or a SPaR tree search per gate and round) -> pairs
# -> DPO -> evaluation;
# sample until accept -> oracle labels -> TP(N), N*, Best-of-N; one report.
# Run: snakemake --profile profiles/local   (or --profile slurm on a cluster, docs/cluster.md)
import os
import sys

from snakemake.utils import min_version

min_version("9.0")
sys.path.insert(0, f"{workflow.basedir}/src")
from judgeflow.workflow import cluster as jf_cluster, settings as jf_settings
from judgeflow.workflow import redact as jf_redact
from judgeflow.workflow.rulekit import Rules

# The embedded default (the demo) unless the command line names config files: those are the whole
# config then (with the documented defaults), never merged over the demo's settings. `--config
# key=value` alone changes the demo.
if not jf_cluster.command_line_configfiles(workflow):

    configfile: f"{workflow.basedir}/config/config.yaml"


report: "workflow/report/workflow.rst"


# First, before any rule is read: the typed settings (judgeflow.workflow.settings) check every key, fill in
# the defaults and resolve "null = another key"; an error names the config key.
config.update(jf_settings.validate(config))
# The API key of every model (its api_key_env variable) is masked in what this process logs.
jf_redact.register_config(config)
# The rules' answers from the stages' declarations (a rule names its stage once: S = JF.stage("<rule>")),
# and the result files from the rules' own outputs (`rules`: Snakemake's rule proxies, filled as they are read).
JF = Rules(config, api_local=jf_cluster.api_local_rules(config), rules=rules)
# Then what a stage would otherwise find out only when it runs, after the jobs upstream of it: the
# placeholders of every prompt template a stage of this config loads, and the API key variable of
# every model such a stage calls (where Snakemake runs; a cluster job re-reads this file without it).
JF.check_before_jobs(environ=None if workflow.remote_exec else os.environ)


include: "rules/common.smk"
include: "rules/cluster.smk"
include: "rules/prepare.smk"
include: "rules/evolve.smk"
include: "rules/clean.smk"
include: "rules/calibration.smk"
include: "rules/sample.smk"
include: "rules/judge.smk"
include: "rules/refine.smk"
include: "rules/pairs.smk"
include: "rules/train.smk"
include: "rules/tree_search.smk"
include: "rules/evaluate.smk"
include: "rules/draws.smk"
include: "rules/oracle.smk"
include: "rules/report.smk"
include: "rules/replicates.smk"


# After the last include: every stage rule took its declarations from its own JF.stage (an error names the
# rule); on SLURM, name the rules the profile gives no resources of their own.
jf_cluster.after_parse(JF, JF_SLURM_SITE, workflow)
# A vllm model that cannot run (not installed, or a rule without a GPU) stops here, naming its key.
jf_cluster.check_vllm(JF, workflow, JF_SLURM_SITE)


rule all:
    default_target: True
    input:
        JF.all_targets(),
