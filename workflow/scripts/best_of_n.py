from judgeflow import smk, stages

smk.setup(snakemake)
out = snakemake.output
stages.best_of_n(snakemake.config, snakemake.input.kept, list(snakemake.input.draws), snakemake.input.fit,
                 out.labels, out.grid, out.plot, log_dir=snakemake.params.log_dir, threads=snakemake.threads)
