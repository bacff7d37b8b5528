from judgeflow import smk, stages

smk.setup(snakemake)
stages.judge_refinements(snakemake.config, snakemake.input.kept, snakemake.input.refinements,
                         snakemake.output.verdicts, snakemake.output.aggregate, threads=snakemake.threads)
