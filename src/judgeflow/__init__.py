"""judgeflow: self-refinement, LLM judges and reward hacking, as a Snakemake workflow."""
__version__ = "0.1.0"
