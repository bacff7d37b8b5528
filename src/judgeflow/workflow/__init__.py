"""The workflow layer: settings (typed, validated), the stages' declarations, the Snakemake rules' helpers, SLURM
support, the job entry point, secrets masking, atomic files.
"""
