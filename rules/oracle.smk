# Oracle labels of accepted draws under a budget -> TP(N), certified N*, the model curve;
# Best-of-N over (N, J, k) from labelled draws, and keeping the judges' top-scored draw of N.
# Each rule comes after those whose outputs it reads (rules.<rule>.output): score_proxy first, the probe before
# the replay.


S = JF.stage("score_proxy")


rule score_proxy:
    """A proxy score f in [0, 1] for every first-accepted draw, from one source: the judges' mean
    P(YES) over judges and criteria, or a model's P(YES) (oracle.proxy names it).
    """
    input:
        unpack(S.inputs),
        kept=rules.clean_questions.output.kept,
        draws=JF.shard_files(rules.sample_until_accept.output.draws),
        verdicts=JF.shard_files(rules.sample_until_accept.output.verdicts),
    output:
        proxy=f"{RESULTS}/oracle/proxy-{{source}}.jsonl",
    log:
        f"{LOGS}/score_proxy/{{source}}.log",
    benchmark:
        f"{BENCH}/score_proxy/{{source}}.tsv"
    wildcard_constraints:
        source=JF.proxy_sources_pattern(),
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


S = JF.stage("label_oracle")


rule label_oracle:
    """The allocation strategy picks which accepted draws the oracle labels (budget, T, delta);
    writes the labels, the certified N*, the empirical and model TP(N) curves (intervals valid for
    how the labels were chosen), TP per extra draw (nstar.json's tp_trend) and the fit.
    """
    input:
        unpack(S.inputs),
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


S = JF.stage("best_of_n")


rule best_of_n:
    """Best-of-N over a grid of N, J and k: TP of a random accepted response and P(at least one
    accepted), per question as the unit, with finite-sample bounds and the independent-judge model;
    and keeping the judges' top-scored draw of N: the oracle's pass rate and the judges' score of it.
    """
    input:
        unpack(S.inputs),
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


S = JF.stage("judge_quality")


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
    localrule: S.local
    conda:
        S.conda
    params:
        **S.params,
    script:
        STAGE_SCRIPT


S = JF.stage("probe")


rule probe:
    """A regularized probe on the policy's hidden state at each question's last prompt token
    predicts the question's p = P(X=1), p0 and p1, out of fold over questions, against a
    constant baseline.
    """
    input:
        unpack(S.inputs),
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


S = JF.stage("oracle_replay")


rule oracle_replay:
    """The strategies replayed on the fully labelled pool, without a proxy and with each proxy
    source: the oracle calls each would have spent, and the N* each certifies.
    """
    input:
        unpack(S.inputs),
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
