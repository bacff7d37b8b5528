# J judges label every (response, criterion); k-of-J aggregation per criterion and overall.


rule judge_responses:
    """The judges label every (response, criterion) of one shard; k-of-J per criterion and overall."""
    input:
        unpack(JF.inputs("judge_responses")),
        kept=f"{RESULTS}/questions/kept.jsonl",
        responses=f"{RESULTS}/responses/shard-{{shard}}.jsonl",
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
        JF.conda("judge_responses", "../envs/models-gpu.yaml")
    threads: JF.threads("judge_responses")
    resources:
        mem_mb=JF.mem_mb("judge_responses"),
        runtime=JF.runtime("judge_responses"),
    params:
        settings=JF.params("judge_responses"),
        code=JF.code("judge_responses"),
    script:
        STAGE_SCRIPT


rule judge_refinements:
    """The judges label every (refinement, criterion) of one shard."""
    input:
        unpack(JF.inputs("judge_refinements")),
        kept=f"{RESULTS}/questions/kept.jsonl",
        refinements=f"{RESULTS}/refinements/shard-{{shard}}.jsonl",
    output:
        verdicts=f"{RESULTS}/verdicts/refinements/shard-{{shard}}.jsonl",
        aggregate=f"{RESULTS}/verdicts/refinements/shard-{{shard}}.aggregate.jsonl",
    log:
        f"{LOGS}/judge_refinements/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/judge_refinements/shard-{{shard}}.tsv"
    priority: 1
    localrule: JF.local("judge_refinements")
    conda:
        JF.conda("judge_refinements", "../envs/models-gpu.yaml")
    threads: JF.threads("judge_refinements")
    resources:
        mem_mb=JF.mem_mb("judge_refinements"),
        runtime=JF.runtime("judge_refinements"),
    params:
        settings=JF.params("judge_refinements"),
        code=JF.code("judge_refinements"),
    script:
        STAGE_SCRIPT
