# SPaR's instruction evolution (evolution.enabled): the oracle adds constraints to each prepared question,
# which become its criteria; clean_questions then reads the evolved questions. Once per study: the replicates
# (results/<run>/seed-<s>/) share it, as they share the question file. Logic: src/judgeflow/questions/evolve.py.
EVOLVED = f"{JF.study}/questions"


S = JF.stage("evolve_questions")


rule evolve_questions:
    """The oracle rewrites each prepared question with added constraints (SPaR's instruction evolution);
    an answer it cannot use is a failure with its reason (evolve_failed.jsonl), counted in the summary.
    """
    input:
        unpack(S.inputs),
        questions=rules.prepare_questions.output.questions,
    output:
        evolved=f"{EVOLVED}/evolved.jsonl",
        failed=f"{EVOLVED}/evolve_failed.jsonl",
        summary=f"{EVOLVED}/evolution.json",
    log:
        f"{JF.study_logs}/evolve_questions/evolve_questions.log",
    benchmark:
        f"{JF.study_bench}/evolve_questions/evolve_questions.tsv"
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
