# SPaR tree search (refining.strategy: tree_search): per self-play round and shard, a breadth-first tree
# of refinements per rejected response, run to the strictest exit gate (tree_search); per round and
# gate, the exit nodes, their pairs and the oracle's preference (tree_search_gate); over all of them,
# gates.csv and the figure (tree_search_summary). Round r >= 2 samples with the policy trained on
# round r-1's pairs (sample_round, judge_round, train_round). Logic: src/judgeflow/refining/tree_search.py.
TREE = f"{RESULTS}/tree_search"
LATER = r"[2-9]|[1-9]\d+"  # rounds 2, 3, ...: round 1 samples and judges with sample_responses, judge_responses


wildcard_constraints:
    round=r"\d+",
    gate=r"\d+of\d+",


rule tree_search:
    """Round {round}, shard {shard}: a tree of refinements per rejected response, to the strictest gate."""
    input:
        unpack(JF.inputs("tree_search")),
        unpack(JF.round_responses),
        kept=rules.clean_questions.output.kept,
    output:
        trees=f"{TREE}/round-{{round}}/trees/shard-{{shard}}.jsonl",
    log:
        f"{LOGS}/tree_search/round-{{round}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/tree_search/round-{{round}}/shard-{{shard}}.tsv"
    priority: 1
    localrule: JF.local("tree_search")
    conda:
        JF.conda("tree_search")
    threads: JF.threads("tree_search")
    resources:
        mem_mb=JF.mem_mb("tree_search"),
        runtime=JF.runtime("tree_search"),
    params:
        settings=JF.params("tree_search"),
        code=JF.code("tree_search"),
    script:
        STAGE_SCRIPT


rule tree_search_gate:
    """Round {round}, gate {gate}: each root's exit node, its pair, the oracle's preference (both orders)."""
    input:
        unpack(JF.inputs("tree_search_gate")),
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
    localrule: JF.local("tree_search_gate")
    conda:
        JF.conda("tree_search_gate")
    threads: JF.threads("tree_search_gate")
    resources:
        mem_mb=JF.mem_mb("tree_search_gate"),
        runtime=JF.runtime("tree_search_gate"),
    params:
        settings=JF.params("tree_search_gate"),
        code=JF.code("tree_search_gate"),
    script:
        STAGE_SCRIPT


rule tree_search_summary:
    """One row per round and gate (gates.csv), pass rate by exit depth, the figure, the generation saved."""
    input:
        finals=JF.all_rounds("final"),
        comparisons=JF.all_rounds("comparisons"),
        trees=JF.all_rounds("trees"),
        aggregates=JF.all_rounds("aggregates"),
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
    log:
        f"{LOGS}/tree_search_summary/tree_search_summary.log",
    benchmark:
        f"{BENCH}/tree_search_summary/tree_search_summary.tsv"
    localrule: JF.local("tree_search_summary")
    conda:
        JF.conda("tree_search_summary")
    params:
        settings=JF.params("tree_search_summary"),
        code=JF.code("tree_search_summary"),
    script:
        STAGE_SCRIPT


rule sample_round:
    """Self-play round {round} >= 2: the actor trained on round {round}-1's pairs samples one shard."""
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
    localrule: JF.local("sample_round")
    conda:
        JF.conda("sample_round")
    threads: JF.threads("sample_round")
    resources:
        mem_mb=JF.mem_mb("sample_round"),
        runtime=JF.runtime("sample_round"),
    params:
        settings=JF.params("sample_round"),
        code=JF.code("sample_round"),
    script:
        STAGE_SCRIPT


rule judge_round:
    """Self-play round {round} >= 2: the judges label the actor's responses; k-of-J aggregation."""
    input:
        unpack(JF.inputs("judge_round")),
        kept=rules.clean_questions.output.kept,
        responses=f"{TREE}/round-{{round}}/responses/shard-{{shard}}.jsonl",
    output:
        verdicts=f"{TREE}/round-{{round,{LATER}}}/verdicts/shard-{{shard}}.jsonl",
        aggregate=f"{TREE}/round-{{round}}/verdicts/shard-{{shard}}.aggregate.jsonl",
    log:
        f"{LOGS}/judge_round/round-{{round}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/judge_round/round-{{round}}/shard-{{shard}}.tsv"
    priority: 1
    localrule: JF.local("judge_round")
    conda:
        JF.conda("judge_round")
    threads: JF.threads("judge_round")
    resources:
        mem_mb=JF.mem_mb("judge_round"),
        runtime=JF.runtime("judge_round"),
    params:
        settings=JF.params("judge_round"),
        code=JF.code("judge_round"),
    script:
        STAGE_SCRIPT


rule train_round:
    """DPO of round {round}'s actor on its pairs of the training gate: round {round}+1's actor."""
    input:
        unpack(JF.inputs("train_round")),
        unpack(JF.round_training),
        accelerate_config=DPO_ACCELERATE_CONFIG,
    output:
        model=directory(f"{TREE}/round-{{round}}/dpo/model"),
        train_log=f"{TREE}/round-{{round}}/dpo/train_log.csv",
        diagnostics=f"{TREE}/round-{{round}}/dpo/diagnostics.jsonl",
        summary=f"{TREE}/round-{{round}}/dpo/summary.json",
    log:
        f"{LOGS}/train_round/round-{{round}}.log",
    benchmark:
        f"{BENCH}/train_round/round-{{round}}.tsv"
    priority: 1
    localrule: JF.local("train_round")
    conda:
        JF.conda("train_round")
    threads: JF.threads("train_round")
    resources:
        mem_mb=JF.mem_mb("train_round"),
        runtime=JF.runtime("train_round"),
        gpu=0,  # GPUs of the job (SLURM profile: set-resources); 0 = one CPU process
    params:
        settings=JF.params("train_round"),
        code=JF.code("train_round"),
    script:
        STAGE_SCRIPT
