# Oracle labels of accepted draws under a budget -> TP(N), certified N*, the model curve;
# Best-of-N over (N, J, k) from labelled draws.


rule label_oracle:
    """The allocation strategy picks which accepted draws the oracle labels (budget, T, delta);
    writes the labels, the certified N*, the empirical and model TP(N) curves and the fit.
    """
    input:
        unpack(JF.inputs("label_oracle")),
        kept=f"{RESULTS}/questions/kept.jsonl",
        draws=JF.shard_files(f"{RESULTS}/draws/shard-{{shard}}.jsonl"),
    output:
        labels=f"{RESULTS}/oracle/labels.jsonl",
        nstar=f"{RESULTS}/oracle/nstar.json",
        curve=report(
            f"{RESULTS}/oracle/tp_curve.csv",
            caption=f"{REPORT_DIR}/tp_table.rst",
            category="Oracle",
        ),
        plot=report(
            f"{RESULTS}/oracle/tp_curve.png",
            caption=f"{REPORT_DIR}/tp_curve.rst",
            category="Oracle",
        ),
        fit=f"{RESULTS}/oracle/fit.json",
    log:
        f"{LOGS}/label_oracle/label_oracle.log",
    benchmark:
        f"{BENCH}/label_oracle/label_oracle.tsv"
    localrule: JF.local("label_oracle")
    conda:
        "../envs/models.yaml"
    threads: JF.threads("label_oracle")
    resources:
        mem_mb=JF.mem_mb("label_oracle"),
        runtime=JF.runtime("label_oracle"),
    params:
        settings=JF.params("label_oracle"),
        code=JF.code("label_oracle"),
    script:
        STAGE_SCRIPT


rule best_of_n:
    """Best-of-N over a grid of N, J and k: TP of a random accepted response and P(at least one
    accepted), per question as the unit, with finite-sample bounds and the independent-judge model.
    """
    input:
        unpack(JF.inputs("best_of_n")),
        kept=f"{RESULTS}/questions/kept.jsonl",
        draws=JF.shard_files(f"{RESULTS}/draws/shard-{{shard}}.jsonl"),
        fit=f"{RESULTS}/oracle/fit.json",
    output:
        labels=f"{RESULTS}/oracle/bon_labels.jsonl",
        grid=report(
            f"{RESULTS}/oracle/bon_grid.csv",
            caption=f"{REPORT_DIR}/bon_grid.rst",
            category="Oracle",
        ),
        plot=report(
            f"{RESULTS}/oracle/bon_grid.png",
            caption=f"{REPORT_DIR}/bon_grid.rst",
            category="Oracle",
        ),
    log:
        f"{LOGS}/best_of_n/best_of_n.log",
    benchmark:
        f"{BENCH}/best_of_n/best_of_n.tsv"
    localrule: JF.local("best_of_n")
    conda:
        "../envs/models.yaml"
    threads: JF.threads("best_of_n")
    resources:
        mem_mb=JF.mem_mb("best_of_n"),
        runtime=JF.runtime("best_of_n"),
    params:
        settings=JF.params("best_of_n"),
        code=JF.code("best_of_n"),
    script:
        STAGE_SCRIPT


rule judge_quality:
    """Each judge and the k-of-J aggregate against the oracle on every labelled draw (confusion matrix,
    p1, p0 with intervals, kappa) and the judges against each other (kappa, correlation of YES).
    """
    input:
        draws=JF.shard_files(f"{RESULTS}/draws/shard-{{shard}}.jsonl"),
        labels=JF.oracle_label_files(),
        fit=f"{RESULTS}/oracle/fit.json",
    output:
        quality=report(
            f"{RESULTS}/judges/quality.csv",
            caption=f"{REPORT_DIR}/judge_quality.rst",
            category="Judges",
        ),
        agreement=report(
            f"{RESULTS}/judges/agreement.csv",
            caption=f"{REPORT_DIR}/judge_agreement.rst",
            category="Judges",
        ),
        summary=f"{RESULTS}/judges/quality.json",
    log:
        f"{LOGS}/judge_quality/judge_quality.log",
    benchmark:
        f"{BENCH}/judge_quality/judge_quality.tsv"
    localrule: JF.local("judge_quality")
    conda:
        "../envs/analysis.yaml"
    params:
        settings=JF.params("judge_quality"),
        code=JF.code("judge_quality"),
    script:
        STAGE_SCRIPT
