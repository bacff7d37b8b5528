# SPaR tree search (refining.strategy: tree_search): per self-play round and shard, a breadth-first tree
# of refinements per rejected response, searched for every exit gate at once (tree_search); per round and
# gate, the exit nodes, their pairs and the oracle's preference (tree_search_gate); over all of them,
# gates.csv and the figure (tree_search_summary). Round 1 is searched once for every gate. With
# refining.tree_search.chains: per_gate (SPaR's), each gate then has its own chain: its actor is DPO-trained
# on its own gate's pairs (train_round, round-<r>/chain-<gate>/dpo), samples and is judged (sample_round,
# judge_round), and its round r >= 2 search (round-<r>/chain-<gate>/) exits by its own gate only. With
# chains: shared, one actor per round, trained on train_gate's pairs (round-<r>/dpo), searched for every gate.
# With refining.tree_search.refiner_training (SPaR's), the refiner is retrained after each round of a chain
# on its successes (train_refiner, round-<r>[/chain-<gate>]/refiner): round r+1's search refines with it and
# its judges on the refiner's model judge with it.
# Logic: src/judgeflow/refining/tree_search.py; the lineages: rulekit (Rules.round_gates).
# tree_search_summary comes last: its inputs are every round's outputs (rules.<rule>.output, defined above).
TREE = f"{RESULTS}/tree_search"
CHAIN = r"(?:/chain-\d+of\d+)?"  # a per-gate chain's round: "2/chain-3of3"
LATER = rf"(?:[2-9]|[1-9]\d+){CHAIN}"  # rounds 2, 3, ...: round 1 samples and judges with sample_responses, judge_responses


wildcard_constraints:
    round=rf"\d+{CHAIN}",
    gate=r"\d+of\d+",


S = JF.stage("tree_search")


rule tree_search:
    """Round {round}, shard {shard}: a tree of refinements per rejected response, for every gate at once."""
    input:
        unpack(S.inputs),
        unpack(JF.round_responses),
        unpack(JF.refiner),
        kept=rules.clean_questions.output.kept,
    output:
        trees=f"{TREE}/round-{{round}}/trees/shard-{{shard}}.jsonl",
    log:
        f"{LOGS}/tree_search/round-{{round}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/tree_search/round-{{round}}/shard-{{shard}}.tsv"
    priority: 1
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


S = JF.stage("tree_search_gate")


rule tree_search_gate:
    """Round {round}, gate {gate}: each root's exit node, its pair, the oracle's preference (both orders)."""
    input:
        unpack(S.inputs),
        kept=rules.clean_questions.output.kept,
        trees=JF.round_trees,
    output:
        final=f"{TREE}/round-{{round}}/gate-{{gate}}/final.jsonl",
        pairs=f"{TREE}/round-{{round}}/gate-{{gate}}/pairs.jsonl",
        comparisons=f"{TREE}/round-{{round}}/gate-{{gate}}/comparisons.jsonl",
    log:
        f"{LOGS}/tree_search_gate/round-{{round}}/gate-{{gate}}.log",
    benchmark:
        f"{BENCH}/tree_search_gate/round-{{round}}/gate-{{gate}}.tsv"
    priority: 1
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


S = JF.stage("sample_round")


rule sample_round:
    """Self-play round {round} >= 2: the actor trained on its chain's round {round}-1 pairs samples one shard."""
    input:
        unpack(JF.actor),
        kept=rules.clean_questions.output.kept,
    output:
        responses=f"{TREE}/round-{{round,{LATER}}}/responses/shard-{{shard}}.jsonl",
    log:
        f"{LOGS}/sample_round/round-{{round}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/sample_round/round-{{round}}/shard-{{shard}}.tsv"
    priority: 1
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


S = JF.stage("judge_round")


rule judge_round:
    """Self-play round {round} >= 2: the judges label the actor's responses; k-of-J aggregation."""
    input:
        unpack(S.inputs),
        unpack(JF.judge_refiner),
        kept=rules.clean_questions.output.kept,
        responses=rules.sample_round.output.responses,
    output:
        verdicts=f"{TREE}/round-{{round,{LATER}}}/verdicts/shard-{{shard}}.jsonl",
        aggregate=f"{TREE}/round-{{round}}/verdicts/shard-{{shard}}.aggregate.jsonl",
    log:
        f"{LOGS}/judge_round/round-{{round}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/judge_round/round-{{round}}/shard-{{shard}}.tsv"
    priority: 1
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


S = JF.stage("train_round")


rule train_round:
    """DPO of round {round}'s actor on its chain's gate's pairs (shared: train_gate's): the next round's actor."""
    input:
        unpack(S.inputs),
        unpack(JF.round_training),
        accelerate_config=DPO_ACCELERATE_CONFIG,
    output:
        model=directory(f"{TREE}/round-{{round}}/dpo/model"),
        train_log=f"{TREE}/round-{{round}}/dpo/train_log.csv",
        diagnostics=f"{TREE}/round-{{round}}/dpo/diagnostics.jsonl",
        summary=f"{TREE}/round-{{round}}/dpo/summary.json",
        logs=directory(f"{TREE}/round-{{round}}/dpo/logs"),  # training.report_to: tensorboard/, wandb/
    log:
        f"{LOGS}/train_round/round-{{round}}.log",
    benchmark:
        f"{BENCH}/train_round/round-{{round}}.tsv"
    priority: 1
    localrule: S.local
    conda:
        S.conda
    threads: S.threads
    resources:
        **S.resources,
        gpu=0,  # GPUs of the job (SLURM profile: set-resources); 0 = one CPU process
    params:
        **S.params,
    script:
        STAGE_SCRIPT


S = JF.stage("train_refiner")


rule train_refiner:
    """SPaR's refiner (and judge) after round {round}: rejection-sampling fine-tuning on the round's successes."""
    input:
        unpack(S.inputs),
        unpack(JF.refiner_training),
        kept=rules.clean_questions.output.kept,
        accelerate_config=DPO_ACCELERATE_CONFIG,
    output:
        model=directory(f"{TREE}/round-{{round}}/refiner/model"),
        examples=f"{TREE}/round-{{round}}/refiner/examples.jsonl",
        train_log=f"{TREE}/round-{{round}}/refiner/train_log.csv",
        summary=f"{TREE}/round-{{round}}/refiner/summary.json",
        logs=directory(f"{TREE}/round-{{round}}/refiner/logs"),  # training.report_to: tensorboard/, wandb/
    log:
        f"{LOGS}/train_refiner/round-{{round}}.log",
    benchmark:
        f"{BENCH}/train_refiner/round-{{round}}.tsv"
    priority: 1
    localrule: S.local
    conda:
        S.conda
    threads: S.threads
    resources:
        **S.resources,
        gpu=0,  # GPUs of the job (SLURM profile: set-resources); 0 = one CPU process
    params:
        **S.params,
    script:
        STAGE_SCRIPT


S = JF.stage("tree_search_summary")


rule tree_search_summary:
    """One row per round and gate (gates.csv), pass rate by exit depth, the figure, the generation saved."""
    input:
        finals=JF.all_rounds("final"),
        comparisons=JF.all_rounds("comparisons"),
        trees=JF.all_rounds("trees"),
        aggregates=JF.all_rounds("aggregates"),
        trainings=JF.round_trainings,
    output:
        gates=report(
            f"{TREE}/gates.csv",
            caption=f"{REPORT_DIR}/tree_search.rst",
            category="Tree search",
        ),
        depth=f"{TREE}/depth.csv",
        plot=report(
            f"{TREE}/gates.png",
            caption=f"{REPORT_DIR}/tree_search.rst",
            category="Tree search",
        ),
        summary=f"{TREE}/summary.json",
        gate_pairs=report(
            f"{TREE}/gate_pairs.csv",
            caption=f"{REPORT_DIR}/tree_search.rst",
            category="Tree search",
        ),
        outcomes=f"{TREE}/gate_outcomes.jsonl",
    log:
        f"{LOGS}/tree_search_summary/tree_search_summary.log",
    benchmark:
        f"{BENCH}/tree_search_summary/tree_search_summary.tsv"
    localrule: S.local
    conda:
        S.conda
    params:
        **S.params,
    script:
        STAGE_SCRIPT
