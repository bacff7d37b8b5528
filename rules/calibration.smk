# The judges' calibration split: the policy's responses to questions set aside after cleaning,
# labelled by the oracle; the trained and reward-model judges learn from it, and every judge is
# measured on it (random responses, not ones the judges selected).


S = JF.stage("sample_calibration")


rule sample_calibration:
    """The policy samples judging.calibration.n_samples responses per calibration question."""
    input:
        unpack(S.inputs),
        calibration=rules.clean_questions.output.calibration,
    output:
        responses=f"{RESULTS}/calibration/responses.jsonl",
    log:
        f"{LOGS}/sample_calibration/sample_calibration.log",
    benchmark:
        f"{BENCH}/sample_calibration/sample_calibration.tsv"
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


S = JF.stage("label_calibration")


rule label_calibration:
    """The oracle labels every (calibration response, criterion): the exact verifier (free), or an
    LLM oracle once per pair within judging.calibration.budget calls (whole responses of a seeded
    random subset past it; through the API cache, a rerun pays nothing twice)."""
    input:
        unpack(S.inputs),
        calibration=rules.clean_questions.output.calibration,
        responses=rules.sample_calibration.output.responses,
    output:
        labels=f"{RESULTS}/calibration/labels.jsonl",
    log:
        f"{LOGS}/label_calibration/label_calibration.log",
    benchmark:
        f"{BENCH}/label_calibration/label_calibration.tsv"
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


S = JF.stage("train_judge")


rule train_judge:
    """A trained judge fitted (a reward-model judge calibrated) on the calibration labels; its
    out-of-fold P(YES) on every calibration (response, criterion)."""
    input:
        unpack(S.inputs),
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


S = JF.stage("judge_calibration")


rule judge_calibration:
    """Every judge on the calibration responses against the oracle (the learned judges out of fold):
    p1, p0, AUC, Brier and kappa with intervals clustered by question, per judge, per criterion kind
    and for the k-of-J aggregate."""
    input:
        unpack(S.inputs),
        calibration=rules.clean_questions.output.calibration,
        responses=rules.sample_calibration.output.responses,
        labels=rules.label_calibration.output.labels,
        learned=JF.learned_judge_files(),
        oof=expand(
            rules.train_judge.output.oof, judge=JF.learned_judges(), allow_missing=True
        ),
    output:
        verdicts=f"{RESULTS}/calibration/verdicts.jsonl",
        table=f"{RESULTS}/judges/calibration.csv",
        summary=f"{RESULTS}/judges/calibration.json",
    log:
        f"{LOGS}/judge_calibration/judge_calibration.log",
    benchmark:
        f"{BENCH}/judge_calibration/judge_calibration.tsv"
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
