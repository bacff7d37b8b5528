# Running on SLURM (profiles/slurm; docs/cluster.md). Logic in src/judgeflow/cluster.py.
#
# Snakemake 9 does not tell a Snakefile which executor it runs under while it is parsed
# (workflow.executor_plugin is still None then). What the parse does see is the profile's raw
# --default-resources / --set-resources / --set-threads (workflow.resource_settings): when they
# reference $JUDGEFLOW_SLURM_* variables, this is a run (or dry-run) with the SLURM profile.
import os

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger as _cluster_log

from judgeflow import cluster as jf_cluster

# 1. Site values: environment, else the site file, else defaults; a missing account or partition
#    stops here, before the DAG is built and any job is submitted. In a job (remote exec mode)
#    the variables are inherited from the submitting process (sbatch --export=ALL).
if not workflow.remote_exec:
    try:
        JF_SLURM_SITE = jf_cluster.prepare_environment(
            jf_cluster.profile_expressions(workflow.resource_settings), os.environ, workflow.basedir)
    except jf_cluster.ClusterConfigError as e:
        raise WorkflowError(str(e))
else:
    JF_SLURM_SITE = None


# 2. After the last rule is parsed: rules calling a hosted API become local rules, and rules the
#    profile does not map are named. Snakemake has no hook for "all rules are defined"; the API
#    calls workflow.check() right after including the Snakefile, so the step runs there.
def _jf_cluster_after_parse(_check=workflow.check):
    names = {r.name for r in workflow.rules}
    api_local = [r for r in jf_cluster.api_local_rules(config) if r in names]
    if api_local:
        workflow.localrules(*api_local)
        if JF_SLURM_SITE is not None:
            _cluster_log.info("SLURM: calling a hosted API, run on this node (localrules): "
                              + ", ".join(api_local))
    if JF_SLURM_SITE is not None:
        # (workflow.is_local() says True for every rule until the executor is known)
        local = {r.name for r in workflow.rules if r.norun} | set(workflow._localrules)
        unmapped = jf_cluster.unmapped_rules(names, local | {"all"},
                                             jf_cluster.mapped_rules(workflow.resource_settings))
        if unmapped:
            _cluster_log.warning("SLURM profile: no per-rule resources for " + ", ".join(unmapped)
                                 + "; they get the CPU defaults (default-resources). "
                                 "Map them under set-resources in profiles/slurm/config.yaml.")
    _check()


workflow.check = _jf_cluster_after_parse
