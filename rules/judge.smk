# J judges label every (response, criterion); k-of-J aggregation per criterion and overall.


S = JF.stage("judge_responses")


rule judge_responses:
    """The judges label every (response, criterion) of one shard; k-of-J per criterion and overall."""
    input:
        unpack(S.inputs),
        kept=rules.clean_questions.output.kept,
        responses=rules.sample_responses.output.responses,
    output:
        verdicts=f"{RESULTS}/verdicts/responses/shard-{{shard}}.jsonl",
        aggregate=f"{RESULTS}/verdicts/responses/shard-{{shard}}.aggregate.jsonl",
    log:
        f"{LOGS}/judge_responses/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/judge_responses/shard-{{shard}}.tsv"
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
