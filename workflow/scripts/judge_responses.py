from judgeflow import smk, stages

smk.setup(snakemake)
stages.judge_responses(snakemake.config, snakemake.input.kept, snakemake.input.responses,
                       snakemake.output.verdicts, snakemake.output.aggregate, threads=snakemake.threads)
