from judgeflow import smk, stages

smk.setup(snakemake)
stages.sample_until_accept(snakemake.config, snakemake.input.kept, int(snakemake.wildcards.shard),
                           snakemake.output.draws, snakemake.output.verdicts, threads=snakemake.threads)
