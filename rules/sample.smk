S = JF.stage("sample_responses")


rule sample_responses:
    """The policy samples n_samples responses per kept question of one shard."""
    input:
        unpack(S.inputs),
        kept=rules.clean_questions.output.kept,
    output:
        responses=f"{RESULTS}/responses/shard-{{shard}}.jsonl",
    log:
        f"{LOGS}/sample_responses/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/sample_responses/shard-{{shard}}.tsv"
    # the path to training, the longest one, before the draws of TP(N) (scheduling only)
    priority: 1
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
