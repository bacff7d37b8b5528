from judgeflow import smk, stages

smk.setup(snakemake)
stages.clean_questions(snakemake.config, snakemake.input.questions, snakemake.output.kept,
                       snakemake.output.rejected, snakemake.output.summary,
                       log_dir=snakemake.params.log_dir, threads=snakemake.threads,
                       heldout=snakemake.output.heldout)
