"""What the rule files ask for, in one provider: `JF = Rules(config, rules=rules)` in the Snakefile, then
per rule one object that names its stage once, just above the rule:

    S = JF.stage("judge_responses")


    rule judge_responses:
        input:
            unpack(S.inputs),
            ...
        localrule: S.local
        conda:
            S.conda
        threads: S.threads
        resources:
            **S.resources,
        params:
            **S.params,

Nothing here is hand-kept per rule: each answer comes from the stage's declaration
(judgeflow.workflow.pipeline), so the rerun triggers are exact by construction. The `settings` param
knows its stage: judgeflow.workflow.cluster.check_stage_rules compares it with the rule's name when the
Snakefile is parsed (another stage's object in a rule is an error naming the rule).

Result paths are spelled once, in the `output:` of the rule that makes them: the lists and dicts of
result files here (targets, the report's sections and headline, a round's or a variant's inputs) take
them from Snakemake's rule proxies (`rules.<rule>.output.<name>`, the Snakefile's `rules`, passed in;
duck-typed: no Snakemake import here).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from judgeflow.judging.verdicts import n_verdicts
from judgeflow.refining.gates import chain_of, gate_name, previous_lineage, round_number
from judgeflow.workflow import pipeline
from judgeflow.workflow.pipeline import STAGES
from judgeflow.workflow.settings import Settings, replicate_seeds


class _Wildcards(dict):
    __getattr__ = dict.__getitem__


# build_pairs' output (rules/pairs.smk) of each refinement mode (refining.modes; a training variant)
PAIR_OUTPUTS = {"multi_feedback": "multi", "full_feedback": "full"}


class _Keep(dict):
    """Format values that keep a wildcard not given ({seed} of a replicate) for Snakemake to fill."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(pattern, **wildcards) -> str:
    """An output pattern of a rule (`rules.<rule>.output.<name>`: its wildcards' constraints stripped)
    with the wildcards given filled in; another ({seed} of a replicate) stays, for Snakemake to fill
    from the job's wildcards (it does so for inputs, input functions' included)."""
    return str(pattern).format_map(_Keep(wildcards))


def fill_seed(value: Any, seed: int | str) -> Any:
    """`value` (a path, or lists, tuples and dicts of them) with the replicate's {seed} filled in."""
    if isinstance(value, str):
        return value.replace("{seed}", str(seed))
    if isinstance(value, (list, tuple)):
        return type(value)(fill_seed(v, seed) for v in value)
    if isinstance(value, dict):
        return {k: fill_seed(v, seed) for k, v in value.items()}
    return value


class StageSettings:
    """The `settings` param of a stage's rule: Snakemake calls it with the job's wildcards and gets the
    stage's declared settings (pipeline.params). It knows its stage (`stage`), which the rule's name must
    be (cluster.check_stage_rules); the value Snakemake records is the settings alone."""

    def __init__(self, stage: str, config: dict):
        self.stage = stage
        self.config = config

    def __call__(self, wildcards) -> dict:
        return pipeline.params(STAGES[self.stage], self.config, dict(wildcards.items()))

    def __repr__(self) -> str:
        return f"StageSettings({self.stage!r})"


class StageRule:
    """What one stage's rule asks for, from its declaration: `S = JF.stage("<rule>")` just above the rule,
    then `localrule: S.local`, `conda: S.conda`, `threads: S.threads`, `resources: **S.resources`,
    `params: **S.params` (the rule's own extra params after it), `input: unpack(S.inputs)`."""

    def __init__(self, kit: Rules, name: str):
        if name not in STAGES:
            raise ValueError(f"JF.stage({name!r}): no such stage (judgeflow.workflow.pipeline declares "
                             f"{', '.join(STAGES)})")
        self.kit = kit
        self.name = name

    @property
    def local(self) -> bool:
        return self.kit.local(self.name)

    @property
    def conda(self) -> str:
        return self.kit.conda(self.name)

    @property
    def threads(self) -> int:
        return self.kit.threads(self.name)

    @property
    def resources(self) -> dict[str, Any]:
        return {"mem_mb": self.kit.mem_mb(self.name), "runtime": self.kit.runtime(self.name)}

    @property
    def params(self) -> dict[str, Any]:
        return {"settings": self.kit.params(self.name), "code": self.kit.code(self.name)}

    @property
    def inputs(self) -> Callable:
        return self.kit.inputs(self.name)


class Rules:
    def __init__(self, config: dict, api_local: Iterable[str] = (), rules: Any = None):
        """`rules`: the Snakefile's `rules` (Snakemake's rule proxies, filled as the rule files are read):
        where the result paths come from. Without it (a config alone) every answer but the result files."""
        self.config = config  # the validated config (what the declarations' dotted paths select from)
        self.settings = Settings.model_validate(dict(config))  # the same, typed: what rulekit reads itself
        s = self.settings
        self.api_local = set(api_local)
        self._rules = rules
        self.run = s.run
        # replicates: every stage of the study once per seed, the wildcard {seed} (results/<run>/seed-<s>/...)
        self.seeds = replicate_seeds(s)
        self.study = f"{s.results_dir}/{self.run}"  # the run's own results (with replicates: their aggregate)
        self.study_logs = f"{s.logs_dir}/{self.run}"
        self.study_bench = f"{s.benchmarks_dir}/{self.run}"
        each = "/seed-{seed}" if self.seeds else ""
        self.results = f"{self.study}{each}"
        self.logs = f"{self.study_logs}{each}"
        self.bench = f"{self.study_bench}{each}"
        self.models_dir = f"{s.resources_dir}/models"
        self.shards = list(range(s.sampling.shards))
        self._digests: dict[str, str] = {}

    # --- checks before any job: what a stage would only find out when it runs -------------------
    def active_stages(self) -> list[str]:
        """The stages this config runs (those `rule all` reaches): not a refinement strategy's it
        does not use, not the probe, replay or proxy unless asked for, no draws or oracle labels
        with draws.enabled false, no Best-of-N with oracle.bon.enabled false."""
        off = pipeline.inactive_stages(self.config)
        return [name for name in STAGES if name not in off]

    def check_before_jobs(self, environ=None) -> None:
        """Raise a ConfigError naming the key for what would otherwise fail only when a stage runs,
        after the jobs upstream of it: a prompt template of a stage this config runs that is
        missing or does not use exactly the placeholders the stage fills
        (judgeflow.generation.prompting.TEMPLATE_FIELDS), or, with `environ` (skipped where None: a cluster
        job, which re-reads the workflow), an `api_key_env` variable that is not set of a model
        such a stage calls. A model defined but not used needs no key."""
        from judgeflow.errors import ConfigError
        from judgeflow.generation.prompting import load_template

        stages = [STAGES[n] for n in self.active_stages()]
        done = set()
        for stage in stages:
            for decl in stage.decl("templates", self.config):
                for where, value in pipeline.select(self.config, decl):
                    key = pipeline._key(where)
                    if where[:2] == ("judging", "judges") and not pipeline.judge_loads(
                            self.config["judging"]["judges"][where[2]], where[3]):
                        continue
                    if key not in done:
                        done.add(key)
                        load_template(value, None, key)
        for i, j in enumerate(self.settings.judging.judges):  # a reward model that exists must be one
            spec = self.settings.models[j.model]
            if j.kind == "reward_model" and spec.backend == "reward_model" and Path(spec.path).exists():
                from judgeflow.models.reward_model import check_seq_cls_dir

                check_seq_cls_dir(spec.path, f"models.{j.model}.path (judging.judges[{i}], a reward_model judge)")
        if environ is None:
            return
        users: dict[str, list[str]] = {}  # model -> the keys naming it, of the stages that run
        for stage in stages:
            for decl in stage.decl("models", self.config):
                for where, name in pipeline.select(self.config, pipeline.for_any_job(decl)):
                    if name is not None and pipeline._key(where) not in users.setdefault(name, []):
                        users[name].append(pipeline._key(where))
        for name, keys in users.items():
            called = self.settings.models.get(name)
            env = called.api_key_env if called is not None and called.backend == "openai" else None
            if env and not environ.get(env):
                named = " and ".join([", ".join(keys[:-1]), keys[-1]] if len(keys) > 1 else keys)
                raise ConfigError(f"models.{name}.api_key_env: environment variable {env} is not set (it must hold "
                                  f"the API key of model '{name}', named by {named}; set it before running the "
                                  f"workflow: export {env}=...)")

    @property
    def rules(self) -> Any:
        """Snakemake's rule proxies (`rules.<rule>.output.<name>`): the result paths."""
        if self._rules is None:
            raise RuntimeError("Rules(config) without the Snakefile's rules (Rules(config, rules=rules)) has no "
                               "result paths: they are the rules' outputs")
        return self._rules

    def stage(self, name: str) -> StageRule:
        """What the rule of stage `name` asks for (StageRule): the one place a rule names itself."""
        return StageRule(self, name)

    # --- params: what shapes the outputs, and the code ----------------------------------------
    def params(self, name: str) -> StageSettings:
        return StageSettings(name, self.config)

    def code(self, name: str) -> str:
        if name not in self._digests:
            self._digests[name] = pipeline.code_digest(STAGES[name])
        return self._digests[name]

    # --- inputs: prepared models and prompt templates ------------------------------------------
    def model_dirs(self, name: str) -> list[str]:
        """Prepared model directories (from `prepare.models`) the stage's models load from."""
        stage = STAGES[name]
        prepared = {str(Path(self.models_dir, n)) for n in self.settings.prepare.models}
        out = set()
        for model in pipeline.model_names(stage, self.config):
            spec = self.settings.models[model]
            p = (spec.serve.path if spec.serve else None) if spec.backend == "openai" else spec.path
            if p and str(Path(p)) in prepared:
                out.add(str(Path(p)))
        return sorted(out)

    def inputs(self, name: str) -> Callable:
        """An input function (for unpack()): {models: the prepared model directories, templates: the
        prompt template files, and of a stage that runs the judges, judges: the learned judges' files} of a
        stage (the judges' when a job is planned: train_judge's outputs, whatever the rules' order)."""
        files = {"models": self.model_dirs(name), "templates": pipeline.template_files(STAGES[name], self.config)}
        if not STAGES[name].judged:
            return lambda wildcards: files
        return lambda wildcards: {**files, "judges": self.learned_judge_files()}

    # --- judges that learn from the calibration split ------------------------------------------
    def learned_judges(self) -> list[str]:
        """The ids of the judges of kind trained or reward_model (train_judge fits each)."""
        return [j.id for j in self.settings.judging.judges if j.kind != "prompt"]

    def learned_judge_files(self) -> list[str]:
        """train_judge's judge.json of every learned judge: inputs of every stage that runs the judges."""
        return [fill(self.rules.train_judge.output.judge, judge=j) for j in self.learned_judges()]

    def calibration_targets(self) -> list[str]:
        table = self.rules.judge_calibration.output.table
        return [str(table)] if self.settings.judging.calibration.questions else []

    # --- where a rule runs, and with what ----------------------------------------------------
    def local(self, name: str) -> bool:
        return STAGES[name].local or name in self.api_local

    def vllm_models(self, name: str) -> list[str]:
        """The models of a stage that use backend vllm (a training stage's none: it loads the weights of a
        vllm model's path with transformers)."""
        if STAGES[name].node == "train":
            return []
        return sorted(m for m in pipeline.model_names(STAGES[name], self.config)
                      if self.settings.models[m].backend == "vllm")

    def conda(self, name: str) -> str:
        """The rule's conda env file, from its stage's declaration (pipeline.conda_env: by its node class),
        or envs/vllm.yaml when a model the rule runs uses backend vllm."""
        return f"../envs/{'vllm' if self.vllm_models(name) else pipeline.conda_env(STAGES[name])}.yaml"

    def _resource(self, name: str, key: str):
        own = self.settings.resources.rules.get(name)
        value = getattr(own, key) if own is not None else None
        return value if value is not None else getattr(self.settings.resources.default, key)

    def threads(self, name: str) -> int:
        return self._resource(name, "threads")

    def mem_mb(self, name: str):
        return self._resource(name, "mem_mb")

    def runtime(self, name: str):
        return self._resource(name, "runtime")

    # --- files -----------------------------------------------------------------------------------
    def questions_file(self) -> str:
        """resources/data/<source>[-first<N>]-<digest>.jsonl, keyed by the settings that shape it
        (prepare_questions' settings: the source, its path, format, fields and split, the limit, and for
        a file whose questions may lack criteria the generic criteria that judge them) and nothing else:
        runs that differ in anything else share it."""
        q = self.settings.questions
        params = pipeline.params(STAGES["prepare_questions"], self.config)
        # the questions section alone where that is all it reads: the names of existing files stay
        shaping = params["questions"] if set(params) == {"questions"} else params
        stem = q.source if q.source in ("ifbench", "composed") else Path(str(q.path)).stem
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:8]
        limit = f"-first{q.limit}" if q.limit else ""
        return f"{self.settings.resources_dir}/data/{stem}{limit}-{digest}.jsonl"

    def questions_to_clean(self) -> str:
        """clean_questions' questions: with evolution.enabled the evolved ones (evolve_questions), else the
        prepared ones (prepare_questions): without evolution the DAG is as it was."""
        if self.settings.evolution.enabled:
            return str(self.rules.evolve_questions.output.evolved)
        return str(self.rules.prepare_questions.output.questions)

    def question_source(self) -> list[str]:
        """The source file (an input: adding a question to it reruns prepare_questions)."""
        q = self.settings.questions
        if q.source == "ifbench":
            from judgeflow.questions.sources import ifbench_file

            return [pipeline.relpath_if_below(ifbench_file())]
        if q.source == "composed":  # the base tasks (the instructions come from the installed checkers)
            from judgeflow.questions.composed import tasks_file

            return [pipeline.relpath_if_below(tasks_file(q.composed.tasks))]
        if q.path is not None and (q.source == "jsonl" or Path(q.path).exists()):  # hf_dataset: a local directory
            return [pipeline.relpath_if_below(q.path)]
        return []  # hf_dataset: a dataset name (from the datasets cache; offline on a cluster)

    def shard_files(self, pattern: str) -> list[str]:
        return [fill(pattern, shard=s) for s in self.shards]

    # --- refinement strategies: single, tree_search (rounds, gates) -------------------------------
    def strategies(self) -> list[str]:
        return list(self.settings.refining.strategy)

    def rounds(self) -> list[int]:
        return list(range(1, self.settings.refining.tree_search.rounds + 1))

    def gates(self) -> list[str]:
        """The exit gates' names, loosest first: ["2of3", "3of3"]."""
        n = n_verdicts(self.settings.judging)
        return [gate_name(k, n) for k in sorted(g.k for g in self.settings.refining.tree_search.gates or [])]

    # Self-play lineages: the `round` wildcard is "1" (round 1, searched once for every gate), "r" (round
    # r of the shared chain: refining.tree_search.chains shared, trained on train_gate's pairs) or
    # "r/chain-<gate>" (round r >= 2 of that gate's own chain: its actor trained on its gate's pairs only).
    def per_gate(self) -> bool:
        return self.settings.refining.tree_search.chains == "per_gate"

    def searched_round(self, r: int, gate: str) -> str:
        """The `round` wildcard of round r's search as gate `gate`'s chain sees it."""
        return str(r) if r == 1 or not self.per_gate() else f"{r}/chain-{gate}"

    def trained_round(self, r: int, gate: str) -> str:
        """The `round` wildcard of the training after round r of gate `gate`'s chain (its next actor)."""
        return f"{r}/chain-{gate}" if self.per_gate() else str(r)

    def train_gates(self) -> list[str]:
        """The gates whose pairs train the next round's actors: every gate (per_gate), else train_gate's."""
        if self.per_gate():
            return self.gates()
        train_gate = self.settings.refining.tree_search.train_gate
        assert train_gate is not None  # validated: null = the loosest gate
        return [gate_name(train_gate, n_verdicts(self.settings.judging))]

    def round_gates(self, r: int) -> list[tuple[str, str]]:
        """(round wildcard, gate) of every tree_search_gate job of round r: round 1 and the shared chain's
        rounds put every gate on one search; round r >= 2 of a per-gate chain only its own gate."""
        return [(self.searched_round(r, g), g) for g in self.gates()]

    def round_searches(self, r: int) -> list[str]:
        """The `round` wildcards of round r's searches (tree_search jobs, per shard)."""
        return sorted({rnd for rnd, _ in self.round_gates(r)})

    def round_responses(self, wildcards) -> dict:
        """A round's responses and the judges' verdicts on them: round 1's are the workflow's own
        (sample_responses, judge_responses); round r >= 2's come from its actor (sample_round, judge_round)."""
        rnd, s = wildcards.round, wildcards.shard
        if rnd == "1":
            sampled, judged = self.rules.sample_responses.output, self.rules.judge_responses.output
            return {"responses": fill(sampled.responses, shard=s), "verdicts": fill(judged.verdicts, shard=s),
                    "aggregate": fill(judged.aggregate, shard=s)}
        sampled, judged = self.rules.sample_round.output, self.rules.judge_round.output
        return {"responses": fill(sampled.responses, round=rnd, shard=s),
                "verdicts": fill(judged.verdicts, round=rnd, shard=s),
                "aggregate": fill(judged.aggregate, round=rnd, shard=s)}

    def round_trees(self, wildcards) -> list[str]:
        return [fill(self.rules.tree_search.output.trees, round=wildcards.round, shard=s) for s in self.shards]

    def all_rounds(self, what: str) -> list[str]:
        """Every round's (and gate's) file of one kind, for tree_search_summary: tree_search_gate's final or
        comparisons, tree_search's trees, or the aggregates of each round's verdicts."""
        out = []
        for r in self.rounds():
            if what in ("final", "comparisons"):
                out += [fill(getattr(self.rules.tree_search_gate.output, what), round=rnd, gate=g)
                        for rnd, g in self.round_gates(r)]
            else:
                for rnd in self.round_searches(r):
                    if what == "trees":
                        out += self.round_trees(_Wildcards(round=rnd))
                    else:  # aggregates
                        out += [self.round_responses(_Wildcards(round=rnd, shard=s))["aggregate"] for s in self.shards]
        return out

    def _previous(self, rnd: str) -> str:
        """The training whose model is the actor (and refiner) of search `rnd` (round r >= 2): round r-1's of
        its chain."""
        return previous_lineage(rnd)

    def round_trainings(self, wildcards) -> list[str]:
        """tree_search_summary: the summaries of the trainings each search of round r >= 2 used (its actor's,
        and with refiner training its refiner's), so that the summary says what each round ran with."""
        out = []
        for r in self.rounds()[1:]:
            for rnd in self.round_searches(r):
                prev = self._previous(rnd)
                out.append(fill(self.rules.train_round.output.summary, round=prev))
                if self.refiner_trained():
                    out.append(fill(self.rules.train_refiner.output.summary, round=prev))
        return out

    def actor(self, wildcards) -> dict:
        """sample_round: round r's actor, trained after round r-1 of its chain (its model and training summary)."""
        trained, prev = self.rules.train_round.output, self._previous(wildcards.round)
        return {"actor": fill(trained.model, round=prev), "actor_summary": fill(trained.summary, round=prev)}

    def round_training(self, wildcards) -> dict:
        """train_round: round r's pairs of its chain's gate (per_gate) or of train_gate (shared), from the
        actor that searched them (the policy in round 1)."""
        r = round_number(wildcards.round)
        gate = chain_of(wildcards.round) or self.train_gates()[0]
        searched = self.searched_round(r, gate)
        out = {"pairs": fill(self.rules.tree_search_gate.output.pairs, round=searched, gate=gate)}
        if r > 1:
            out["init"] = fill(self.rules.train_round.output.model, round=self._previous(searched))
        return out

    # SPaR's refiner (and judge) training per round and chain (refining.tree_search.refiner_training): the
    # training after round r of a chain (train_refiner, the `round` wildcard of train_round's lineages) reads
    # that chain's round-r search; round r+1's tree_search, and its judge_round where a judge runs on the
    # refiner's model, read the result
    def refiner_trained(self) -> bool:
        return self.settings.refining.tree_search.refiner_training.enabled

    def refiner(self, wildcards) -> dict:
        """tree_search (and judge_round, `judge_refiner`) of round r >= 2: the refiner trained after round r-1
        of its chain (its model and training summary); nothing in round 1 or without refiner training."""
        if not self.refiner_trained() or round_number(wildcards.round) < 2:
            return {}
        trained, prev = self.rules.train_refiner.output, self._previous(wildcards.round)
        return {"refiner": fill(trained.model, round=prev), "refiner_summary": fill(trained.summary, round=prev)}

    def judge_refiner(self, wildcards) -> dict:
        """judge_round: the retrained refiner where a judge runs on its model (SPaR: the refiner is the judge;
        pipeline.judges_on_retrained_refiner, which declares refining.model for judge_round then)."""
        return self.refiner(wildcards) if pipeline.judges_on_retrained_refiner(self.config) else {}

    def refiner_training(self, wildcards) -> dict:
        """train_refiner: its chain's round-r search (trees) and, with judgments, that round's responses and
        verdicts; from round 2 the refiner trained after the round before (else the refining model's path)."""
        r = round_number(wildcards.round)
        gate = chain_of(wildcards.round) or self.train_gates()[0]
        searched = self.searched_round(r, gate)
        out: dict[str, Any] = {"trees": self.round_trees(_Wildcards(round=searched))}
        if self.settings.refining.tree_search.refiner_training.judgments:
            shards = [self.round_responses(_Wildcards(round=searched, shard=s)) for s in self.shards]
            out |= {"responses": [x["responses"] for x in shards], "verdicts": [x["verdicts"] for x in shards]}
        if r > 1:
            out["init"] = fill(self.rules.train_refiner.output.model, round=self._previous(searched))
        return out

    def pair_file(self, mode: str) -> str:
        """build_pairs' pairs of one refinement mode (multi_feedback, full_feedback)."""
        return str(getattr(self.rules.build_pairs.output, PAIR_OUTPUTS[mode]))

    def variant_pairs(self, wildcards) -> dict:
        """train_dpo: a variant's pairs (a tree-search gate's: the last round's, trained from its actor)."""
        v = wildcards.variant
        if not v.startswith("tree_search_"):
            return {"pairs": self.pair_file(v)}
        last, gate = self.rounds()[-1], v.removeprefix("tree_search_")
        searched = self.searched_round(last, gate)
        out = {"pairs": fill(self.rules.tree_search_gate.output.pairs, round=searched, gate=gate)}
        if last > 1:  # from the actor that searched them: its chain's (per_gate), else the shared one
            out["init"] = fill(self.rules.train_round.output.model, round=self.trained_round(last - 1, gate))
        return out

    def targets(self) -> list[str]:
        """What `rule all` asks for besides the report's files."""
        o = self.rules
        out = [str(o.evaluate_policies.output.summary)]
        if "single" in self.strategies():
            out += [self.pair_file(m) for m in self.settings.refining.modes] + [str(o.build_pairs.output.summary)]
        if "tree_search" in self.strategies():
            out += [str(o.tree_search_summary.output.gates)]
        return out + self.calibration_targets()

    def variant_files(self, pattern: str) -> list[str]:
        return [fill(pattern, variant=v) for v in self.settings.training.variants or []]

    def policies(self) -> list[str]:
        return ["base", *(self.settings.training.variants or [])]

    def policy_files(self, pattern: str) -> list[str]:
        return [fill(pattern, policy=p) for p in self.policies()]

    def oracle_label_files(self) -> list[str]:
        """The oracle's labels of draws: the strategy's (and the curve's), then Best-of-N's."""
        o = self.rules
        return [str(o.label_oracle.output.labels)] + ([str(o.best_of_n.output.labels)]
                                                      if self.settings.oracle.bon.enabled else [])

    def strategy_proxy(self) -> list[str]:
        """label_oracle: the proxy scores a prediction-powered strategy reads (else none)."""
        o = self.settings.oracle
        proxy = self.rules.score_proxy.output.proxy
        return [fill(proxy, source=o.proxy)] if o.strategy == "prediction_powered" else []

    def proxy_sources(self) -> list[str]:
        """The proxy sources scored: the judges' always (they are free), and oracle.proxy's model."""
        p = self.settings.oracle.proxy
        return ["judges"] + ([p] if p not in ("none", "judges") else [])

    def proxy_sources_pattern(self) -> str:
        return "|".join(re.escape(s) for s in self.proxy_sources())

    def replay_proxies(self) -> list[str]:
        return [fill(self.rules.score_proxy.output.proxy, source=s) for s in self.proxy_sources()]

    def probe_predictions(self) -> list[str]:
        return [str(self.rules.probe.output.predictions)] if self.settings.probe.enabled else []

    def report_sections(self) -> list[tuple[str, list[str]]]:
        """(heading, [files]) of the report, for the stages this config runs."""
        o = self.rules

        def files(rule, *names: str) -> list[str]:
            return [str(getattr(rule.output, n)) for n in names]

        s = [("Questions", files(o.clean_questions, "summary"))]
        if self.settings.evolution.enabled:
            s.insert(0, ("Instruction evolution (SPaR): constraints added to each question, failures by kind",
                         files(o.evolve_questions, "summary")))
        if self.calibration_targets():
            s.append(("Judges on the calibration split (random responses of the policy; learned judges out of fold)",
                      files(o.judge_calibration, "table", "summary")))
        if "single" in self.strategies():
            s.append(("Preference pairs", files(o.build_pairs, "overall", "summary")))
        if "tree_search" in self.strategies():
            s.append(("Tree search (SPaR): the exit gates compared on the same roots (paired: difference, "
                      "question-clustered interval, exact McNemar, Holm), then each gate's preference and pass rate "
                      "by depth", files(o.tree_search_summary, "gate_pairs", "plot", "gates", "depth", "summary")))
        s += [("DPO training: gradient weights per pair", files(o.dpo_diagnostics, "plot", "training", "table")),
              ("Evaluation on held-out questions", files(o.evaluate_policies, "table", "summary"))]
        if self.settings.draws.enabled:
            s.append(("Oracle: TP(N) and N*", files(o.label_oracle, "plot", "curve", "nstar", "fit")))
            s.append(("Judges against the oracle on the labelled draws (selected by the judges' own accepts: "
                      "p1 and p0 are biased; the calibration split's are not)",
                      files(o.judge_quality, "quality", "agreement", "summary")))
            if self.settings.oracle.bon.enabled:
                s.append(("Best-of-N", files(o.best_of_n, "plot", "grid", "kept_plot", "kept")))
            if self.settings.oracle.replay_runs:
                s.append(("Oracle calls with and without a proxy (replayed on the labelled pool)",
                          files(o.oracle_replay, "table", "summary")))
            if self.settings.probe.enabled:
                s.append(("Activation probe: p, p0, p1 from the policy's hidden state (out of fold)",
                          files(o.probe, "table", "metrics")))
        return s

    def headline_files(self) -> dict[str, str]:
        """The summary files the report's headline panel reads (each is also one of its inputs)."""
        o = self.rules
        out = {"cleaning": str(o.clean_questions.output.summary), "evaluation": str(o.evaluate_policies.output.summary)}
        if "single" in self.strategies():
            out["pairs"] = str(o.build_pairs.output.overall)
        if "tree_search" in self.strategies():
            out["tree_search"] = str(o.tree_search_summary.output.summary)
        if self.settings.draws.enabled:
            out.update(nstar=str(o.label_oracle.output.nstar), fit=str(o.label_oracle.output.fit),
                       judges=str(o.judge_quality.output.summary))
            if self.settings.oracle.bon.enabled:
                out["bon_kept"] = str(o.best_of_n.output.kept)
            if self.settings.oracle.replay_runs:
                out["replay"] = str(o.oracle_replay.output.summary)
            if self.settings.probe.enabled:
                out["probe"] = str(o.probe.output.metrics)
        return out

    def report_files(self) -> list[str]:
        return [f for _, files in self.report_sections() for f in files]

    # --- replicates: the study once per seed (the wildcard {seed}), and their aggregate -----------
    def per_job(self, value: Any) -> Any:
        """A rule's param that names result files: as is without replicates, else a function of the job's
        wildcards with its replicate's {seed} filled in (Snakemake fills strings and lists of strings only)."""
        if not self.seeds:
            return value
        return lambda wildcards: fill_seed(value, wildcards.seed)

    def each_seed(self, files: Iterable[str]) -> list[str]:
        """Every replicate's copy of each file (the files themselves without replicates)."""
        files = [str(f) for f in files]
        return [fill_seed(f, s) for s in self.seeds for f in files] if self.seeds else files

    def all_targets(self) -> list[str]:
        """`rule all`'s inputs: the study's targets, report files and report (each replicate's), and the
        replicates' aggregate."""
        study = [*self.targets(), *self.report_files(), str(self.rules.report.output.html)]
        if not self.seeds:
            return study
        return self.each_seed(study) + [str(f) for f in self.rules.aggregate_replicates.output]

    def replicate_files(self) -> dict[str, str]:
        """The files whose headlines aggregate_replicates reads: the report's headline files, and with the
        draws the TP(N) curve."""
        out = self.headline_files()
        if self.settings.draws.enabled:
            out["curve"] = str(self.rules.label_oracle.output.curve)
        return out

    def replicate_inputs(self, wildcards) -> dict[str, list[str]]:
        """aggregate_replicates: each of those files, one per seed (in the seeds' order)."""
        return {name: [fill_seed(f, s) for s in self.seeds] for name, f in self.replicate_files().items()}

    def policy_inputs(self, wildcards) -> dict:
        """evaluate_responses: a trained variant's model and training summary (the base: none)."""
        p = wildcards.policy
        if p == "base":
            return {}
        trained = self.rules.train_dpo.output
        return {"trained": fill(trained.model, variant=p), "summary": fill(trained.summary, variant=p)}
