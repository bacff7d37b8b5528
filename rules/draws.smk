# Sample until the judges accept: draws per question until the k-of-J aggregate accepts (N).


rule sample_until_accept:
    """The policy draws for each question until the aggregated judges accept or draws.n_max is
    spent; every draw, its verdicts and the accepted draw's N are recorded."""
    input:
        kept=f"{RESULTS}/questions/kept.jsonl",
        models=model_dirs(config["draws"]["model"] or config["sampling"]["model"],
                          *(j["model"] for j in config["judging"]["judges"])),
    output:
        draws=f"{RESULTS}/draws/shard-{{shard}}.jsonl",
        verdicts=f"{RESULTS}/draws/shard-{{shard}}.verdicts.jsonl",
    params:
        draws=config["draws"],
        sampling=config["sampling"],
        judging=config["judging"],
        models=models_params(config["draws"]["model"] or config["sampling"]["model"],
                             *(j["model"] for j in config["judging"]["judges"])),
        seed=config["seed"],
    log:
        f"{LOGS}/sample_until_accept/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/sample_until_accept/shard-{{shard}}.tsv"
    threads: rule_threads("sample_until_accept")
    resources:
        mem_mb=rule_mem("sample_until_accept"),
        runtime=rule_runtime("sample_until_accept"),
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/sample_until_accept.py"
