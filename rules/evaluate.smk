# The base policy and each trained policy on the held-out questions: judge pass rates, exact
# IFBench checks, and the oracle's pairwise preference against the base (both orders).
# Logic: src/judgeflow/evaluation.py.


def evaluation_model_names():
    names = {jf_dpo.policy_model_name(config)} | {j["model"] for j in config["judging"]["judges"]}
    if config["evaluation"]["oracle"]:
        names.add(config["evaluation"]["oracle"])
    return sorted(names)


if config["evaluation"]["oracle"] and config["evaluation"]["oracle"] not in config["models"]:
    raise jf_dpo.ConfigError(f"evaluation.oracle: unknown model '{config['evaluation']['oracle']}' "
                             f"(defined under models: {', '.join(sorted(config['models']))})")


rule evaluate_policies:
    """Generate on the held-out questions with the base and each trained policy; judge pass rates
    per criterion, verifier pass rates, oracle win rates vs the base with 95% intervals."""
    input:
        heldout=f"{RESULTS}/questions/heldout.jsonl",
        trained=dpo_outputs("model"),
        summaries=dpo_outputs("summary.json"),
        models=model_dirs(*evaluation_model_names()),
    output:
        generations=f"{RESULTS}/evaluation/generations.jsonl",
        verdicts=f"{RESULTS}/evaluation/verdicts.jsonl",
        comparisons=f"{RESULTS}/evaluation/comparisons.jsonl",
        table=f"{RESULTS}/evaluation/table.csv",
        summary=f"{RESULTS}/evaluation/evaluation.json",
    params:
        evaluation=config["evaluation"],
        judging=config["judging"],
        variants=DPO_VARIANTS,
        models=models_params(*evaluation_model_names()),
        sampling={k: config["sampling"][k] for k in ("max_new_tokens", "system_prompt")},
        seed=config["seed"],
        log_dir=f"{LOGS}/evaluate_policies",
    log:
        f"{LOGS}/evaluate_policies/evaluate_policies.log",
    benchmark:
        f"{BENCH}/evaluate_policies/evaluate_policies.tsv"
    threads: rule_threads("evaluate_policies")
    resources:
        mem_mb=rule_mem("evaluate_policies"),
        runtime=rule_runtime("evaluate_policies"),
    conda:
        "../envs/training.yaml"
    script:
        "../workflow/scripts/evaluate_policies.py"


if "REPORT_EXTRA" in globals():
    REPORT_EXTRA.append(("Evaluation on held-out questions", [f"{RESULTS}/evaluation/table.csv"]))
