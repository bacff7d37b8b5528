# Sample until the judges accept: draws per question until the k-of-J aggregate accepts (N).


rule sample_until_accept:
    """The policy draws for each question until the aggregated judges accept or draws.n_max is
    spent; every draw, its verdicts and the accepted draw's N are recorded."""
    input:
        unpack(JF.inputs("sample_until_accept")),
        kept=rules.clean_questions.output.kept,
    output:
        draws=f"{RESULTS}/draws/shard-{{shard}}.jsonl",
        verdicts=f"{RESULTS}/draws/shard-{{shard}}.verdicts.jsonl",
    log:
        f"{LOGS}/sample_until_accept/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/sample_until_accept/shard-{{shard}}.tsv"
    localrule: JF.local("sample_until_accept")
    conda:
        JF.conda("sample_until_accept")
    threads: JF.threads("sample_until_accept")
    resources:
        mem_mb=JF.mem_mb("sample_until_accept"),
        runtime=JF.runtime("sample_until_accept"),
    params:
        settings=JF.params("sample_until_accept"),
        code=JF.code("sample_until_accept"),
    script:
        STAGE_SCRIPT
