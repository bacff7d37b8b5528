from judgeflow import smk, stages

smk.setup(snakemake)
out = snakemake.output
stages.label_oracle(snakemake.config, snakemake.input.kept, list(snakemake.input.draws), out.labels, out.nstar,
                    out.curve, out.plot, out.fit, log_dir=snakemake.params.log_dir, threads=snakemake.threads)
