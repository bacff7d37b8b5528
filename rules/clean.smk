rule clean_questions:
    """The oracle keeps meaningful, answerable questions and rejects the rest with a reason;
    `questions.heldout` kept questions are set aside for evaluation (never sampled for pairs)."""
    input:
        questions=questions_file(),
        models=model_dirs(config["cleaning"]["model"]) if config["cleaning"]["enabled"] else [],
    output:
        kept=f"{RESULTS}/questions/kept.jsonl",
        rejected=f"{RESULTS}/questions/rejected.jsonl",
        heldout=f"{RESULTS}/questions/heldout.jsonl",
        summary=f"{RESULTS}/questions/cleaning.json",
    params:
        cleaning=config["cleaning"],
        max_prompt_chars=config["questions"]["max_prompt_chars"],
        heldout=config["questions"]["heldout"],
        models=models_params(config["cleaning"]["model"]),
        log_dir=f"{LOGS}/clean_questions",
    log:
        f"{LOGS}/clean_questions/clean_questions.log",
    benchmark:
        f"{BENCH}/clean_questions/clean_questions.tsv"
    threads: rule_threads("clean_questions")
    resources:
        mem_mb=rule_mem("clean_questions"),
        runtime=rule_runtime("clean_questions"),
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/clean_questions.py"
