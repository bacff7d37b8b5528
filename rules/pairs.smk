S = JF.stage("build_pairs")


rule build_pairs:
    """Preference pairs (refined > original) that the aggregated judges accept, in TRL's
    conversational format, plus a per-criterion summary table."""
    input:
        kept=rules.clean_questions.output.kept,
        responses=JF.shard_files(rules.sample_responses.output.responses),
        response_verdicts=JF.shard_files(rules.judge_responses.output.verdicts),
        response_aggregates=JF.shard_files(rules.judge_responses.output.aggregate),
        refinements=JF.shard_files(rules.refine_responses.output.refinements),
        refinement_verdicts=JF.shard_files(rules.judge_refinements.output.verdicts),
        refinement_aggregates=JF.shard_files(rules.judge_refinements.output.aggregate),
    output:
        multi=f"{RESULTS}/pairs/multi_feedback.jsonl",
        full=f"{RESULTS}/pairs/full_feedback.jsonl",
        summary=report(
            f"{RESULTS}/pairs/summary.csv",
            caption=f"{REPORT_DIR}/pairs.rst",
            category="Pairs",
        ),
        overall=f"{RESULTS}/pairs/summary.json",
    log:
        f"{LOGS}/build_pairs/build_pairs.log",
    benchmark:
        f"{BENCH}/build_pairs/build_pairs.tsv"
    priority: 1
    localrule: S.local
    conda:
        S.conda
    params:
        **S.params,
    script:
        STAGE_SCRIPT
