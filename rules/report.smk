# One HTML page with every figure and table of the run: results/<run>/report.html


S = JF.stage("report")


rule report:
    """Every figure and table of the run on one self-contained page (plus per-rule timings)."""
    input:
        JF.report_files(),
    output:
        html=report(
            f"{RESULTS}/report.html",
            caption=f"{REPORT_DIR}/summary.rst",
            category="Summary",
        ),
        timings=f"{RESULTS}/timings.csv",
    log:
        f"{LOGS}/report/report.log",
    benchmark:
        f"{BENCH}/report/report.tsv"
    localrule: S.local
    conda:
        S.conda
    params:
        **S.params,
        sections=JF.per_job(JF.report_sections()),
        headline=JF.per_job(JF.headline_files()),
    script:
        STAGE_SCRIPT
