from judgeflow import smk, stages

smk.setup(snakemake)
stages.sample_responses(snakemake.config, snakemake.input.kept, int(snakemake.wildcards.shard),
                        snakemake.output[0], threads=snakemake.threads)
