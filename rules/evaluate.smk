# The base policy and each trained policy on the held-out questions: judge pass rates, exact
# IFBench checks, and the oracle's pairwise preference against the base (both orders).
# Logic: src/judgeflow/evaluation.py.


def evaluation_model_names(oracle=True):
    names = {jf_dpo.policy_model_name(config)} | {j["model"] for j in config["judging"]["judges"]}
    if oracle and config["evaluation"]["oracle"]:
        names.add(config["evaluation"]["oracle"])
    return sorted(names)


if config["evaluation"]["oracle"] and config["evaluation"]["oracle"] not in config["models"]:
    raise jf_dpo.ConfigError(f"evaluation.oracle: unknown model '{config['evaluation']['oracle']}' "
                             f"(defined under models: {', '.join(sorted(config['models']))})")


EVAL_POLICIES = ["base"] + DPO_VARIANTS


wildcard_constraints:
    policy="|".join(["base", *jf_dpo.VARIANTS]),


def eval_policy_inputs(wc):
    """base: the policy's prepared directory; a variant: its trained model and training summary."""
    if wc.policy == "base":
        return {"models": model_dirs(jf_dpo.policy_model_name(config))}
    return {"trained": f"{RESULTS}/dpo/{wc.policy}/model", "summary": f"{RESULTS}/dpo/{wc.policy}/summary.json"}


def eval_outputs(kind):
    return expand(f"{RESULTS}/evaluation/{kind}/{{policy}}.jsonl", policy=EVAL_POLICIES)


rule evaluate_responses:
    """One policy (the base, or a trained variant) answers the held-out questions (the same seeds for
    every policy: paired); the judges label every (response, criterion), k-of-J per response.
    Runs the models (a GPU job); the base's job does not wait for training."""
    input:
        unpack(eval_policy_inputs),
        heldout=f"{RESULTS}/questions/heldout.jsonl",
        judges=model_dirs(*{j["model"] for j in config["judging"]["judges"]}),
    output:
        generations=f"{RESULTS}/evaluation/responses/{{policy}}.jsonl",
        verdicts=f"{RESULTS}/evaluation/verdicts/{{policy}}.jsonl",
        aggregates=f"{RESULTS}/evaluation/verdicts/{{policy}}.aggregate.jsonl",
    params:
        evaluation={k: v for k, v in config["evaluation"].items() if not k.startswith("oracle") and k != "confidence"},
        judging=config["judging"],
        models=models_params(*evaluation_model_names(oracle=False)),
        sampling={k: config["sampling"][k] for k in ("max_new_tokens", "system_prompt")},
        seed=config["seed"],
        base_path=DPO_POLICY_PATH,
    log:
        f"{LOGS}/evaluate_responses/{{policy}}.log",
    benchmark:
        f"{BENCH}/evaluate_responses/{{policy}}.tsv"
    threads: rule_threads("evaluate_responses")
    resources:
        mem_mb=rule_mem("evaluate_responses"),
        runtime=rule_runtime("evaluate_responses"),
    conda:
        "../envs/training.yaml"
    script:
        "../workflow/scripts/evaluate_responses.py"


rule evaluate_policies:
    """Exact verifier pass rates, the oracle's preference of each trained policy vs the base (both
    orders, agreement required) with win-rate intervals, and the table. Calls the oracle only (a
    hosted API runs where Snakemake runs, see cluster.api_rules; a serve: oracle in a job)."""
    input:
        heldout=f"{RESULTS}/questions/heldout.jsonl",
        generations=eval_outputs("responses"),
        verdicts=eval_outputs("verdicts"),
        aggregates=expand(f"{RESULTS}/evaluation/verdicts/{{policy}}.aggregate.jsonl", policy=EVAL_POLICIES),
        summaries=dpo_outputs("summary.json"),
        models=model_dirs(*([config["evaluation"]["oracle"]] if config["evaluation"]["oracle"] else [])),
    output:
        comparisons=f"{RESULTS}/evaluation/comparisons.jsonl",
        table=f"{RESULTS}/evaluation/table.csv",
        summary=f"{RESULTS}/evaluation/evaluation.json",
    params:
        evaluation=config["evaluation"],
        variants=DPO_VARIANTS,
        trained=dpo_outputs("model"),
        models=models_params(*([config["evaluation"]["oracle"]] if config["evaluation"]["oracle"] else [])),
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
