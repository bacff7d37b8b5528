from judgeflow import evaluation, smk

smk.setup(snakemake)
i, o = snakemake.input, snakemake.output
evaluation.respond_and_judge(snakemake.config, i.heldout, snakemake.params.variants, list(i.summaries),
                             list(i.trained), o.generations, o.verdicts, o.aggregates, threads=snakemake.threads)
