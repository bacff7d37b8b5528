rule sample_responses:
    """The policy samples n_samples responses per kept question of one shard."""
    input:
        unpack(JF.inputs("sample_responses")),
        kept=rules.clean_questions.output.kept,
    output:
        responses=f"{RESULTS}/responses/shard-{{shard}}.jsonl",
    log:
        f"{LOGS}/sample_responses/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/sample_responses/shard-{{shard}}.tsv"
    # the path to training, the longest one, before the draws of TP(N) (scheduling only)
    priority: 1
    localrule: JF.local("sample_responses")
    conda:
        JF.conda("sample_responses")
    threads: JF.threads("sample_responses")
    resources:
        mem_mb=JF.mem_mb("sample_responses"),
        runtime=JF.runtime("sample_responses"),
    params:
        settings=JF.params("sample_responses"),
        code=JF.code("sample_responses"),
    script:
        STAGE_SCRIPT
