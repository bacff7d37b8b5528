# Oracle labels of accepted draws under a budget -> TP(N), certified N*, the model curve;
# Best-of-N over (N, J, k) from labelled draws, and keeping the judges' top-scored draw of N.


rule label_oracle:
    """The allocation strategy picks which accepted draws the oracle labels (budget, T, delta);
    writes the labels, the certified N*, the empirical and model TP(N) curves (intervals valid for
    how the labels were chosen), TP per extra draw (nstar.json's tp_trend) and the fit.
    """
    input:
        unpack(JF.inputs("label_oracle")),
        kept=rules.clean_questions.output.kept,
        draws=JF.shard_files(rules.sample_until_accept.output.draws),
        proxy=JF.strategy_proxy(),
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
        JF.conda("label_oracle")
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
    accepted), per question as the unit, with finite-sample bounds and the independent-judge model;
    and keeping the judges' top-scored draw of N: the oracle's pass rate and the judges' score of it.
    """
    input:
        unpack(JF.inputs("best_of_n")),
        kept=rules.clean_questions.output.kept,
        draws=JF.shard_files(rules.sample_until_accept.output.draws),
        fit=rules.label_oracle.output.fit,
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
        kept=report(
            f"{RESULTS}/oracle/bon_kept.csv",
            caption=f"{REPORT_DIR}/bon_kept.rst",
            category="Oracle",
        ),
        kept_plot=report(
            f"{RESULTS}/oracle/bon_kept.png",
            caption=f"{REPORT_DIR}/bon_kept.rst",
            category="Oracle",
        ),
    log:
        f"{LOGS}/best_of_n/best_of_n.log",
    benchmark:
        f"{BENCH}/best_of_n/best_of_n.tsv"
    localrule: JF.local("best_of_n")
    conda:
        JF.conda("best_of_n")
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
        draws=JF.shard_files(rules.sample_until_accept.output.draws),
        labels=JF.oracle_label_files(),
        fit=rules.label_oracle.output.fit,
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
        JF.conda("judge_quality")
    params:
        settings=JF.params("judge_quality"),
        code=JF.code("judge_quality"),
    script:
        STAGE_SCRIPT


rule score_proxy:
    """A proxy score f in [0, 1] for every first-accepted draw, from one source: the judges' mean
    P(YES) over judges and criteria, or a model's P(YES) (oracle.proxy names it).
    """
    input:
        unpack(JF.inputs("score_proxy")),
        kept=rules.clean_questions.output.kept,
        draws=JF.shard_files(rules.sample_until_accept.output.draws),
        verdicts=JF.shard_files(f"{RESULTS}/draws/shard-{{shard}}.verdicts.jsonl"),
    output:
        proxy=f"{RESULTS}/oracle/proxy-{{source}}.jsonl",
    log:
        f"{LOGS}/score_proxy/{{source}}.log",
    benchmark:
        f"{BENCH}/score_proxy/{{source}}.tsv"
    wildcard_constraints:
        source=JF.proxy_sources_pattern(),
    localrule: JF.local("score_proxy")
    conda:
        JF.conda("score_proxy")
    threads: JF.threads("score_proxy")
    resources:
        mem_mb=JF.mem_mb("score_proxy"),
        runtime=JF.runtime("score_proxy"),
    params:
        settings=JF.params("score_proxy"),
        code=JF.code("score_proxy"),
    script:
        STAGE_SCRIPT


rule oracle_replay:
    """The strategies replayed on the fully labelled pool, without a proxy and with each proxy
    source: the oracle calls each would have spent, and the N* each certifies.
    """
    input:
        unpack(JF.inputs("oracle_replay")),
        labels=rules.label_oracle.output.labels,
        proxies=JF.replay_proxies(),
        probe=JF.probe_predictions(),
    output:
        table=report(
            f"{RESULTS}/oracle/replay.csv",
            caption=f"{REPORT_DIR}/replay.rst",
            category="Oracle",
        ),
        summary=f"{RESULTS}/oracle/replay.json",
    log:
        f"{LOGS}/oracle_replay/oracle_replay.log",
    benchmark:
        f"{BENCH}/oracle_replay/oracle_replay.tsv"
    localrule: JF.local("oracle_replay")
    conda:
        JF.conda("oracle_replay")
    threads: JF.threads("oracle_replay")
    resources:
        mem_mb=JF.mem_mb("oracle_replay"),
        runtime=JF.runtime("oracle_replay"),
    params:
        settings=JF.params("oracle_replay"),
        code=JF.code("oracle_replay"),
    script:
        STAGE_SCRIPT


rule probe:
    """A regularized probe on the policy's hidden state at each question's last prompt token
    predicts the question's p = P(X=1), p0 and p1, out of fold over questions, against a
    constant baseline.
    """
    input:
        unpack(JF.inputs("probe")),
        kept=rules.clean_questions.output.kept,
        draws=JF.shard_files(rules.sample_until_accept.output.draws),
        labels=JF.oracle_label_files(),
    output:
        metrics=f"{RESULTS}/probe/metrics.json",
        table=report(
            f"{RESULTS}/probe/metrics.csv",
            caption=f"{REPORT_DIR}/probe.rst",
            category="Oracle",
        ),
        predictions=f"{RESULTS}/probe/predictions.jsonl",
    log:
        f"{LOGS}/probe/probe.log",
    benchmark:
        f"{BENCH}/probe/probe.tsv"
    localrule: JF.local("probe")
    conda:
        JF.conda("probe")
    threads: JF.threads("probe")
    resources:
        mem_mb=JF.mem_mb("probe"),
        runtime=JF.runtime("probe"),
    params:
        settings=JF.params("probe"),
        code=JF.code("probe"),
    script:
        STAGE_SCRIPT
