from judgeflow import smk, stages

smk.setup(snakemake)
stages.prepare_questions(snakemake.config, snakemake.output[0])
