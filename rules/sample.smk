rule sample_responses:
    """The policy samples n_samples responses per kept question of one shard."""
    input:
        kept=f"{RESULTS}/questions/kept.jsonl",
        models=model_dirs(config["sampling"]["model"]),
    output:
        f"{RESULTS}/responses/shard-{{shard}}.jsonl",
    params:
        sampling=config["sampling"],
        models=models_params(config["sampling"]["model"]),
        seed=config["seed"],
    log:
        f"{LOGS}/sample_responses/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/sample_responses/shard-{{shard}}.tsv"
    threads: rule_threads("sample_responses")
    resources:
        mem_mb=rule_mem("sample_responses"),
        runtime=rule_runtime("sample_responses"),
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/sample_responses.py"
