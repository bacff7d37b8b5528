S = JF.stage("clean_questions")


rule clean_questions:
    """The oracle keeps meaningful, answerable questions (the evolved ones with evolution.enabled) and
    rejects the rest with a reason; `questions.heldout` kept questions are set aside for evaluation and
    `judging.calibration.questions` for the judges' calibration (neither is ever sampled for pairs, DPO,
    TP(N) or the tree search).
    """
    input:
        unpack(S.inputs),
        questions=JF.questions_to_clean(),
    output:
        kept=f"{RESULTS}/questions/kept.jsonl",
        rejected=f"{RESULTS}/questions/rejected.jsonl",
        heldout=f"{RESULTS}/questions/heldout.jsonl",
        calibration=f"{RESULTS}/questions/calibration.jsonl",
        summary=f"{RESULTS}/questions/cleaning.json",
    log:
        f"{LOGS}/clean_questions/clean_questions.log",
    benchmark:
        f"{BENCH}/clean_questions/clean_questions.tsv"
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
