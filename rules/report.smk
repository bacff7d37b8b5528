# One HTML page with every figure and table of the run: results/<run>/report.html


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
    localrule: JF.local("report")
    conda:
        JF.conda("report")
    params:
        settings=JF.params("report"),
        code=JF.code("report"),
        sections=JF.report_sections(),
        headline=JF.headline_files(),
    script:
        STAGE_SCRIPT
