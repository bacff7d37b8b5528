from judgeflow import dpo_diagnostics, smk

smk.setup(snakemake)
dpo_diagnostics.compare_variants(list(snakemake.input.diagnostics), list(snakemake.input.summaries),
                                 snakemake.output.table, snakemake.output.plot, snakemake.output.training,
                                 title=f"run {snakemake.params.run}")
