from judgeflow import evaluation, smk

smk.setup(snakemake)
i, o = snakemake.input, snakemake.output
evaluation.evaluate(snakemake.config, i.heldout, snakemake.params.variants, list(i.summaries),
                    list(snakemake.params.trained), list(i.generations), list(i.verdicts), list(i.aggregates),
                    o.comparisons, o.table, o.summary, log_dir=snakemake.params.log_dir, threads=snakemake.threads)
