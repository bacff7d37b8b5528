from judgeflow import smk, stages

smk.setup(snakemake)
stages.refine_responses(snakemake.config, snakemake.input.kept, snakemake.input.responses,
                        snakemake.input.verdicts, snakemake.input.aggregate, snakemake.output[0],
                        threads=snakemake.threads)
