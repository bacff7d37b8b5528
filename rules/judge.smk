# J judges label every (response, criterion); k-of-J aggregation per criterion and overall.


rule judge_responses:
    input:
        kept=f"{RESULTS}/questions/kept.jsonl",
        responses=f"{RESULTS}/responses/shard-{{shard}}.jsonl",
        models=judge_model_dirs(),
    output:
        verdicts=f"{RESULTS}/verdicts/responses/shard-{{shard}}.jsonl",
        aggregate=f"{RESULTS}/verdicts/responses/shard-{{shard}}.aggregate.jsonl",
    params:
        judging=config["judging"],
        models=models_params(*(j["model"] for j in config["judging"]["judges"])),
    log:
        f"{LOGS}/judge_responses/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/judge_responses/shard-{{shard}}.tsv"
    threads: rule_threads("judge_responses")
    resources:
        mem_mb=rule_mem("judge_responses"),
        runtime=rule_runtime("judge_responses"),
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/judge_responses.py"


rule judge_refinements:
    input:
        kept=f"{RESULTS}/questions/kept.jsonl",
        refinements=f"{RESULTS}/refinements/shard-{{shard}}.jsonl",
        models=judge_model_dirs(),
    output:
        verdicts=f"{RESULTS}/verdicts/refinements/shard-{{shard}}.jsonl",
        aggregate=f"{RESULTS}/verdicts/refinements/shard-{{shard}}.aggregate.jsonl",
    params:
        judging=config["judging"],
        models=models_params(*(j["model"] for j in config["judging"]["judges"])),
    log:
        f"{LOGS}/judge_refinements/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/judge_refinements/shard-{{shard}}.tsv"
    threads: rule_threads("judge_refinements")
    resources:
        mem_mb=rule_mem("judge_refinements"),
        runtime=rule_runtime("judge_refinements"),
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/judge_refinements.py"
