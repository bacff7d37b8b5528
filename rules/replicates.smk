# Replicates (`replicates: R` or a list of seeds): every stage above runs once per seed, the wildcard {seed}
# (results/<run>/seed-<s>/...); here each replicate's headline files are read into one table per seed and a
# mean with an interval across seeds. Logic: src/judgeflow/replicates.py.
REPLICATES = f"{JF.study}/replicates"


S = JF.stage("aggregate_replicates")


rule aggregate_replicates:
    """Each headline of the study per seed, and its mean with a t-interval across the seeds."""
    input:
        unpack(JF.replicate_inputs),
    output:
        headlines=f"{REPLICATES}/headlines.csv",
        aggregate=report(
            f"{REPLICATES}/aggregate.csv",
            caption=f"{REPORT_DIR}/replicates.rst",
            category="Replicates",
        ),
        plot=report(
            f"{REPLICATES}/aggregate.png",
            caption=f"{REPORT_DIR}/replicates.rst",
            category="Replicates",
        ),
        summary=f"{REPLICATES}/summary.json",
        html=f"{REPLICATES}/report.html",
    log:
        f"{JF.study_logs}/aggregate_replicates/aggregate_replicates.log",
    benchmark:
        f"{JF.study_bench}/aggregate_replicates/aggregate_replicates.tsv"
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
