# Oracle labels of accepted draws under a budget -> TP(N), certified N*, the model curve;
# Best-of-N over (N, J, k) from labelled draws.


def oracle_models():
    lab = config["oracle"]["labeller"]
    return [] if lab == "verifier" else [lab]


rule label_oracle:
    """The allocation strategy picks which accepted draws the oracle labels (budget, T, delta);
    writes the labels, the certified N*, the empirical and model TP(N) curves and the fit."""
    input:
        kept=f"{RESULTS}/questions/kept.jsonl",
        draws=shard_files(f"{RESULTS}/draws/shard-{{shard}}.jsonl"),
        models=model_dirs(*oracle_models()),
    output:
        labels=f"{RESULTS}/oracle/labels.jsonl",
        nstar=f"{RESULTS}/oracle/nstar.json",
        curve=f"{RESULTS}/oracle/tp_curve.csv",
        plot=f"{RESULTS}/oracle/tp_curve.png",
        fit=f"{RESULTS}/oracle/fit.json",
    params:
        oracle={k: v for k, v in config["oracle"].items() if k != "bon"},
        n_max=config["draws"]["n_max"],
        models=models_params(*oracle_models()),
        seed=config["seed"],
        log_dir=f"{LOGS}/label_oracle",
    log:
        f"{LOGS}/label_oracle/label_oracle.log",
    benchmark:
        f"{BENCH}/label_oracle/label_oracle.tsv"
    threads: rule_threads("label_oracle")
    resources:
        mem_mb=rule_mem("label_oracle"),
        runtime=rule_runtime("label_oracle"),
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/label_oracle.py"


rule best_of_n:
    """Best-of-N over a grid of N, J and k: TP of a random accepted response and P(at least one
    accepted), per question as the unit, with finite-sample bounds and the independent-judge model."""
    input:
        kept=f"{RESULTS}/questions/kept.jsonl",
        draws=shard_files(f"{RESULTS}/draws/shard-{{shard}}.jsonl"),
        fit=f"{RESULTS}/oracle/fit.json",
        models=model_dirs(*oracle_models()),
    output:
        labels=f"{RESULTS}/oracle/bon_labels.jsonl",
        grid=f"{RESULTS}/oracle/bon_grid.csv",
        plot=f"{RESULTS}/oracle/bon_grid.png",
    params:
        oracle=config["oracle"],
        judging=config["judging"],
        models=models_params(*oracle_models()),
        log_dir=f"{LOGS}/best_of_n",
    log:
        f"{LOGS}/best_of_n/best_of_n.log",
    benchmark:
        f"{BENCH}/best_of_n/best_of_n.tsv"
    threads: rule_threads("best_of_n")
    resources:
        mem_mb=rule_mem("best_of_n"),
        runtime=rule_runtime("best_of_n"),
    conda:
        "../envs/models.yaml"
    script:
        "../workflow/scripts/best_of_n.py"
