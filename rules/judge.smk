# J judges label every (response, criterion); k-of-J aggregation per criterion and overall.


rule judge_responses:
    """The judges label every (response, criterion) of one shard; k-of-J per criterion and overall."""
    input:
        unpack(JF.inputs("judge_responses")),
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
    localrule: JF.local("judge_responses")
    conda:
        JF.conda("judge_responses")
    threads: JF.threads("judge_responses")
    resources:
        mem_mb=JF.mem_mb("judge_responses"),
        runtime=JF.runtime("judge_responses"),
    params:
        settings=JF.params("judge_responses"),
        code=JF.code("judge_responses"),
    script:
        STAGE_SCRIPT
