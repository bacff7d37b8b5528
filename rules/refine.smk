rule refine_responses:
    """Refine each failing response once per failed criterion and once on all of them."""
    input:
        kept=f"{RESULTS}/questions/kept.jsonl",
        responses=f"{RESULTS}/responses/shard-{{shard}}.jsonl",
        verdicts=f"{RESULTS}/verdicts/responses/shard-{{shard}}.jsonl",
        aggregate=f"{RESULTS}/verdicts/responses/shard-{{shard}}.aggregate.jsonl",
        models=model_dirs(config["refining"]["model"]),
    output:
        f"{RESULTS}/refinements/shard-{{shard}}.jsonl",
    params:
        refining=config["refining"],
        models=models_params(config["refining"]["model"]),
        seed=config["seed"],
    log:
        f"{LOGS}/refine_responses/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/refine_responses/shard-{{shard}}.tsv"
    threads: rule_threads("refine_responses")
    resources:
        mem_mb=rule_mem("refine_responses"),
        runtime=rule_runtime("refine_responses"),
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/refine_responses.py"
