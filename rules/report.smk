# One HTML page with every figure and table of the run: results/<run>/report.html


def report_sections():
    """[(heading, [files])] of the stages this config runs; each file is an input of `report`."""
    s = [("Questions", [f"{RESULTS}/questions/cleaning.json"]),
         ("Preference pairs", [f"{RESULTS}/pairs/summary.json", f"{RESULTS}/pairs/summary.csv"])]
    s += REPORT_EXTRA  # stages added by their own rule files (training, evaluation)
    if config["draws"]["enabled"]:
        s.append(("Oracle: TP(N) and N*", [f"{RESULTS}/oracle/tp_curve.png", f"{RESULTS}/oracle/tp_curve.csv",
                                           f"{RESULTS}/oracle/nstar.json", f"{RESULTS}/oracle/fit.json"]))
        if config["oracle"]["bon"]["enabled"]:
            s.append(("Best-of-N", [f"{RESULTS}/oracle/bon_grid.png", f"{RESULTS}/oracle/bon_grid.csv"]))
    return s


rule report:
    """Every figure and table of the run on one self-contained page (plus per-rule timings)."""
    input:
        lambda wc: [f for _, files in report_sections() for f in files],
    output:
        html=f"{RESULTS}/report.html",
        timings=f"{RESULTS}/timings.csv",
    params:
        sections=report_sections(),
        bench_dir=BENCH,
        run=RUN,
        results=RESULTS,
    log:
        f"{LOGS}/report/report.log",
    benchmark:
        f"{BENCH}/report/report.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/report.py"
