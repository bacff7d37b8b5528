# The base policy and each trained policy on the held-out questions: judge pass rates, exact
# IFBench checks, and the oracle's pairwise preference against the base (both orders).
# Logic: src/judgeflow/training/evaluation.py.


wildcard_constraints:
    policy="base|" + jf_dpo.VARIANT_PATTERN,


S = JF.stage("evaluate_responses")


rule evaluate_responses:
    """One policy (the base, or a trained variant) answers the held-out questions (the same seeds for
    every policy: paired); the judges label every (response, criterion), k-of-J per response.
    Runs the models (a GPU job); the base's job does not wait for training."""
    input:
        unpack(S.inputs),
        unpack(JF.policy_inputs),
        heldout=rules.clean_questions.output.heldout,
    output:
        generations=f"{RESULTS}/evaluation/responses/{{policy}}.jsonl",
        verdicts=f"{RESULTS}/evaluation/verdicts/{{policy}}.jsonl",
        aggregates=f"{RESULTS}/evaluation/verdicts/{{policy}}.aggregate.jsonl",
    log:
        f"{LOGS}/evaluate_responses/{{policy}}.log",
    benchmark:
        f"{BENCH}/evaluate_responses/{{policy}}.tsv"
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


S = JF.stage("evaluate_policies")


rule evaluate_policies:
    """Exact verifier pass rates, the oracle's preference of each trained policy vs the base (both
    orders, agreement required) with win-rate intervals, and the table. Calls the oracle only (a
    hosted API runs where Snakemake runs, see cluster.api_rules; a serve: oracle in a job).
    """
    input:
        unpack(S.inputs),
        heldout=rules.clean_questions.output.heldout,
        generations=JF.policy_files(rules.evaluate_responses.output.generations),
        verdicts=JF.policy_files(rules.evaluate_responses.output.verdicts),
        aggregates=JF.policy_files(rules.evaluate_responses.output.aggregates),
        summaries=JF.variant_files(rules.train_dpo.output.summary),
    output:
        comparisons=f"{RESULTS}/evaluation/comparisons.jsonl",
        table=report(
            f"{RESULTS}/evaluation/table.csv",
            caption=f"{REPORT_DIR}/evaluation.rst",
            category="Evaluation",
        ),
        summary=f"{RESULTS}/evaluation/evaluation.json",
    log:
        f"{LOGS}/evaluate_policies/evaluate_policies.log",
    benchmark:
        f"{BENCH}/evaluate_policies/evaluate_policies.tsv"
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
