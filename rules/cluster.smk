# Running on SLURM (profiles/slurm; docs/cluster.md). Logic in src/judgeflow/workflow/cluster.py.
#
# Snakemake 9 does not tell a Snakefile which executor it runs under while it is parsed. What the
# parse does see is the profile's raw --default-resources / --set-resources / --set-threads
# (workflow.resource_settings): when they reference $JUDGEFLOW_SLURM_* variables, this is a run
# (or dry-run) with the SLURM profile. Site values come from the environment, else the site file,
# else defaults; a missing account or partition stops here, before any job is submitted. In a job
# (remote exec mode) the variables are inherited from the submitting process (sbatch --export=ALL).
JF_SLURM_SITE = jf_cluster.site_values(workflow)
