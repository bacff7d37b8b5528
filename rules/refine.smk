rule refine_responses:
    """Refine each failing response once per failed criterion and once on all of them."""
    input:
        unpack(JF.inputs("refine_responses")),
        kept=rules.clean_questions.output.kept,
        responses=rules.sample_responses.output.responses,
        verdicts=rules.judge_responses.output.verdicts,
        aggregate=rules.judge_responses.output.aggregate,
    output:
        refinements=f"{RESULTS}/refinements/shard-{{shard}}.jsonl",
    log:
        f"{LOGS}/refine_responses/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/refine_responses/shard-{{shard}}.tsv"
    priority: 1
    localrule: JF.local("refine_responses")
    conda:
        JF.conda("refine_responses")
    threads: JF.threads("refine_responses")
    resources:
        mem_mb=JF.mem_mb("refine_responses"),
        runtime=JF.runtime("refine_responses"),
    params:
        settings=JF.params("refine_responses"),
        code=JF.code("refine_responses"),
    script:
        STAGE_SCRIPT


# The refinements are judged like the responses (judge.smk); here, after the rule that makes them.
rule judge_refinements:
    """The judges label every (refinement, criterion) of one shard."""
    input:
        unpack(JF.inputs("judge_refinements")),
        kept=rules.clean_questions.output.kept,
        refinements=rules.refine_responses.output.refinements,
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
        JF.conda("judge_refinements")
    threads: JF.threads("judge_refinements")
    resources:
        mem_mb=JF.mem_mb("judge_refinements"),
        runtime=JF.runtime("judge_refinements"),
    params:
        settings=JF.params("judge_refinements"),
        code=JF.code("judge_refinements"),
    script:
        STAGE_SCRIPT
