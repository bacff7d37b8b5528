rule build_pairs:
    """Preference pairs (refined > original) that the aggregated judges accept, in TRL's
    conversational format, plus a per-criterion summary table."""
    input:
        kept=f"{RESULTS}/questions/kept.jsonl",
        responses=shard_files(f"{RESULTS}/responses/shard-{{shard}}.jsonl"),
        response_verdicts=shard_files(f"{RESULTS}/verdicts/responses/shard-{{shard}}.jsonl"),
        response_aggregates=shard_files(f"{RESULTS}/verdicts/responses/shard-{{shard}}.aggregate.jsonl"),
        refinements=shard_files(f"{RESULTS}/refinements/shard-{{shard}}.jsonl"),
        refinement_verdicts=shard_files(f"{RESULTS}/verdicts/refinements/shard-{{shard}}.jsonl"),
        refinement_aggregates=shard_files(f"{RESULTS}/verdicts/refinements/shard-{{shard}}.aggregate.jsonl"),
    output:
        multi=f"{RESULTS}/pairs/multi_feedback.jsonl",
        full=f"{RESULTS}/pairs/full_feedback.jsonl",
        summary=f"{RESULTS}/pairs/summary.csv",
        overall=f"{RESULTS}/pairs/summary.json",
    params:
        pairs=config["pairs"],
    log:
        f"{LOGS}/build_pairs/build_pairs.log",
    benchmark:
        f"{BENCH}/build_pairs/build_pairs.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/build_pairs.py"
