rule clean_questions:
    """The oracle keeps meaningful, answerable questions and rejects the rest with a reason;
    `questions.heldout` kept questions are set aside for evaluation and `judging.calibration.questions`
    for the judges' calibration (neither is ever sampled for pairs, DPO, TP(N) or the tree search).
    """
    input:
        unpack(JF.inputs("clean_questions")),
        questions=JF.questions_file(),
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
    localrule: JF.local("clean_questions")
    conda:
        JF.conda("clean_questions")
    threads: JF.threads("clean_questions")
    resources:
        mem_mb=JF.mem_mb("clean_questions"),
        runtime=JF.runtime("clean_questions"),
    params:
        settings=JF.params("clean_questions"),
        code=JF.code("clean_questions"),
    script:
        STAGE_SCRIPT
