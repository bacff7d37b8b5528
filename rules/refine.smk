rule refine_responses:
    """Refine each failing response once per failed criterion and once on all of them."""
    input:
        unpack(JF.inputs("refine_responses")),
        kept=f"{RESULTS}/questions/kept.jsonl",
        responses=f"{RESULTS}/responses/shard-{{shard}}.jsonl",
        verdicts=f"{RESULTS}/verdicts/responses/shard-{{shard}}.jsonl",
        aggregate=f"{RESULTS}/verdicts/responses/shard-{{shard}}.aggregate.jsonl",
    output:
        refinements=f"{RESULTS}/refinements/shard-{{shard}}.jsonl",
    log:
        f"{LOGS}/refine_responses/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/refine_responses/shard-{{shard}}.tsv"
    priority: 1
    localrule: JF.local("refine_responses")
    conda:
        JF.conda("refine_responses", "../envs/models-gpu.yaml")
    threads: JF.threads("refine_responses")
    resources:
        mem_mb=JF.mem_mb("refine_responses"),
        runtime=JF.runtime("refine_responses"),
    params:
        settings=JF.params("refine_responses"),
        code=JF.code("refine_responses"),
    script:
        STAGE_SCRIPT
