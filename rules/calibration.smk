# The judges' calibration split: the policy's responses to questions set aside after cleaning,
# labelled by the oracle; the trained and reward-model judges learn from it, and every judge is
# measured on it (random responses, not ones the judges selected).


rule sample_calibration:
    """The policy samples judging.calibration.n_samples responses per calibration question."""
    input:
        unpack(JF.inputs("sample_calibration")),
        calibration=rules.clean_questions.output.calibration,
    output:
        responses=f"{RESULTS}/calibration/responses.jsonl",
    log:
        f"{LOGS}/sample_calibration/sample_calibration.log",
    benchmark:
        f"{BENCH}/sample_calibration/sample_calibration.tsv"
    localrule: JF.local("sample_calibration")
    conda:
        JF.conda("sample_calibration")
    threads: JF.threads("sample_calibration")
    resources:
        mem_mb=JF.mem_mb("sample_calibration"),
        runtime=JF.runtime("sample_calibration"),
    params:
        settings=JF.params("sample_calibration"),
        code=JF.code("sample_calibration"),
    script:
        STAGE_SCRIPT


rule label_calibration:
    """The oracle labels every (calibration response, criterion): the exact verifier (free), or an
    LLM oracle once per pair within judging.calibration.budget calls (whole responses of a seeded
    random subset past it; through the API cache, a rerun pays nothing twice)."""
    input:
        unpack(JF.inputs("label_calibration")),
        calibration=rules.clean_questions.output.calibration,
        responses=rules.sample_calibration.output.responses,
    output:
        labels=f"{RESULTS}/calibration/labels.jsonl",
    log:
        f"{LOGS}/label_calibration/label_calibration.log",
    benchmark:
        f"{BENCH}/label_calibration/label_calibration.tsv"
    localrule: JF.local("label_calibration")
    conda:
        JF.conda("label_calibration")
    threads: JF.threads("label_calibration")
    resources:
        mem_mb=JF.mem_mb("label_calibration"),
        runtime=JF.runtime("label_calibration"),
    params:
        settings=JF.params("label_calibration"),
        code=JF.code("label_calibration"),
    script:
        STAGE_SCRIPT


rule train_judge:
    """A trained judge fitted (a reward-model judge calibrated) on the calibration labels; its
    out-of-fold P(YES) on every calibration (response, criterion)."""
    input:
        unpack(JF.inputs("train_judge")),
        calibration=rules.clean_questions.output.calibration,
        responses=rules.sample_calibration.output.responses,
        labels=rules.label_calibration.output.labels,
    output:
        judge=f"{RESULTS}/judges/{{judge}}/judge.json",
        head=f"{RESULTS}/judges/{{judge}}/head.npz",
        oof=f"{RESULTS}/judges/{{judge}}/oof.jsonl",
    log:
        f"{LOGS}/train_judge/{{judge}}.log",
    benchmark:
        f"{BENCH}/train_judge/{{judge}}.tsv"
    wildcard_constraints:
        judge="|".join(JF.learned_judges()) or "(?!)",
    localrule: JF.local("train_judge")
    conda:
        JF.conda("train_judge")
    threads: JF.threads("train_judge")
    resources:
        mem_mb=JF.mem_mb("train_judge"),
        runtime=JF.runtime("train_judge"),
    params:
        settings=JF.params("train_judge"),
        code=JF.code("train_judge"),
    script:
        STAGE_SCRIPT


rule judge_calibration:
    """Every judge on the calibration responses against the oracle (the learned judges out of fold):
    p1, p0, AUC, Brier and kappa with intervals clustered by question, per judge, per criterion kind
    and for the k-of-J aggregate."""
    input:
        unpack(JF.inputs("judge_calibration")),
        calibration=rules.clean_questions.output.calibration,
        responses=rules.sample_calibration.output.responses,
        labels=rules.label_calibration.output.labels,
        learned=JF.learned_judge_files(),
        oof=expand(rules.train_judge.output.oof, judge=JF.learned_judges()),
    output:
        verdicts=f"{RESULTS}/calibration/verdicts.jsonl",
        table=f"{RESULTS}/judges/calibration.csv",
        summary=f"{RESULTS}/judges/calibration.json",
    log:
        f"{LOGS}/judge_calibration/judge_calibration.log",
    benchmark:
        f"{BENCH}/judge_calibration/judge_calibration.tsv"
    localrule: JF.local("judge_calibration")
    conda:
        JF.conda("judge_calibration")
    threads: JF.threads("judge_calibration")
    resources:
        mem_mb=JF.mem_mb("judge_calibration"),
        runtime=JF.runtime("judge_calibration"),
    params:
        settings=JF.params("judge_calibration"),
        code=JF.code("judge_calibration"),
    script:
        STAGE_SCRIPT
