S = JF.stage("refine_responses")


rule refine_responses:
    """Refine each failing response once per failed criterion and once on all of them."""
    input:
        unpack(S.inputs),
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


# The refinements are judged like the responses (judge.smk); here, after the rule that makes them.
S = JF.stage("judge_refinements")


rule judge_refinements:
    """The judges label every (refinement, criterion) of one shard."""
    input:
        unpack(S.inputs),
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
