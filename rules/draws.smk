# Sample until the judges accept: draws per question until the k-of-J aggregate accepts (N).


S = JF.stage("sample_until_accept")


rule sample_until_accept:
    """The policy draws for each question until the aggregated judges accept or draws.n_max is
    spent; every draw, its verdicts and the accepted draw's N are recorded."""
    input:
        unpack(S.inputs),
        kept=rules.clean_questions.output.kept,
    output:
        draws=f"{RESULTS}/draws/shard-{{shard}}.jsonl",
        verdicts=f"{RESULTS}/draws/shard-{{shard}}.verdicts.jsonl",
    log:
        f"{LOGS}/sample_until_accept/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/sample_until_accept/shard-{{shard}}.tsv"
    localrule: S.local
    conda:
        S.conda
    threads: S.threads
    resources:
        **S.resources,
    params:
        **S.params,
    script:
        STAGE_SCRIPT
