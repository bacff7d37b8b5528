from judgeflow import evaluation, smk

smk.setup(snakemake)
i, o, p = snakemake.input, snakemake.output, snakemake.params
policy = snakemake.wildcards.policy
evaluation.respond_and_judge(snakemake.config, i.heldout, policy, p.base_path if policy == "base" else i.trained,
                             None if policy == "base" else i.summary, o.generations, o.verdicts, o.aggregates,
                             threads=snakemake.threads)
