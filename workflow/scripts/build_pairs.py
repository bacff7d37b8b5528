from judgeflow import smk, stages

smk.setup(snakemake)
i, o = snakemake.input, snakemake.output
stages.build_pairs(snakemake.config, i.kept, i.responses, i.response_aggregates, i.response_verdicts,
                   i.refinements, i.refinement_aggregates, i.refinement_verdicts,
                   o.multi, o.full, o.summary, o.overall)
