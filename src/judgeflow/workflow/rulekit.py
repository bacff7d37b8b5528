"""What the rule files ask for, in one provider: `JF = Rules(config)` in the Snakefile, then
`params: settings=JF.params("judge_responses"), code=JF.code("judge_responses")`,
`input: unpack(JF.inputs("judge_responses"))`, `threads: JF.threads("judge_responses")`, ...

Nothing here is hand-kept per rule: each answer comes from the stage's declaration
(judgeflow.workflow.pipeline), so the rerun triggers are exact by construction. No Snakemake import.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

from judgeflow.refining.gates import gate_name
from judgeflow.workflow import pipeline
from judgeflow.workflow.pipeline import STAGES


class _Wildcards(dict):
    __getattr__ = dict.__getitem__


class Rules:
    def __init__(self, config: dict, api_local: Iterable[str] = ()):
        self.config = config
        self.api_local = set(api_local)
        self.run = config["run"]
        self.results = f"{config['results_dir']}/{self.run}"
        self.logs = f"{config['logs_dir']}/{self.run}"
        self.bench = f"{config['benchmarks_dir']}/{self.run}"
        self.models_dir = f"{config['resources_dir']}/models"
        self.shards = list(range(config["sampling"]["shards"]))
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
                    if key not in done:
                        done.add(key)
                        load_template(value, None, key)
        for i, j in enumerate(self.config["judging"]["judges"]):  # a reward model that exists must be one
            path = self.config["models"][j["model"]].get("path")
            if j["kind"] == "reward_model" and path and Path(path).exists():
                from judgeflow.models.reward_model import check_seq_cls_dir

                check_seq_cls_dir(path, f"models.{j['model']}.path (judging.judges[{i}], a reward_model judge)")
        if environ is None:
            return
        users: dict[str, list[str]] = {}  # model -> the keys naming it, of the stages that run
        for stage in stages:
            for decl in stage.decl("models", self.config):
                for where, name in pipeline.select(self.config, pipeline.for_any_job(decl)):
                    if name is not None and pipeline._key(where) not in users.setdefault(name, []):
                        users[name].append(pipeline._key(where))
        for name, keys in users.items():
            env = (self.config["models"].get(name) or {}).get("api_key_env")
            if env and not environ.get(env):
                named = " and ".join([", ".join(keys[:-1]), keys[-1]] if len(keys) > 1 else keys)
                raise ConfigError(f"models.{name}.api_key_env: environment variable {env} is not set (it must hold "
                                  f"the API key of model '{name}', named by {named}; set it before running the "
                                  f"workflow: export {env}=...)")

    # --- params: what shapes the outputs, and the code ----------------------------------------
    def params(self, name: str):
        stage = STAGES[name]
        return lambda wildcards: pipeline.params(stage, self.config, dict(wildcards.items()))

    def code(self, name: str) -> str:
        if name not in self._digests:
            self._digests[name] = pipeline.code_digest(STAGES[name])
        return self._digests[name]

    # --- inputs: prepared models and prompt templates ------------------------------------------
    def model_dirs(self, name: str) -> list[str]:
        """Prepared model directories (from `prepare.models`) the stage's models load from."""
        stage = STAGES[name]
        prepared = {str(Path(self.models_dir, n)) for n in self.config["prepare"]["models"]}
        out = set()
        for model in pipeline.model_names(stage, self.config):
            spec = self.config["models"][model]
            for p in (spec.get("path"), (spec.get("serve") or {}).get("path")):
                if p and str(Path(p)) in prepared:
                    out.add(str(Path(p)))
        return sorted(out)

    def inputs(self, name: str):
        """An input function (for unpack()): {models: the prepared model directories, templates: the
        prompt template files} of a stage."""
        files = {"models": self.model_dirs(name), "templates": pipeline.template_files(STAGES[name], self.config)}
        if STAGES[name].judged:
            files["judges"] = self.learned_judge_files()
        return lambda wildcards: files

    # --- judges that learn from the calibration split ------------------------------------------
    def learned_judges(self) -> list[str]:
        """The ids of the judges of kind trained or reward_model (train_judge fits each)."""
        return [j["id"] for j in self.config["judging"]["judges"] if j["kind"] != "prompt"]

    def learned_judge_files(self) -> list[str]:
        """judges/<id>/judge.json of every learned judge: inputs of every stage that runs the judges."""
        return [f"{self.results}/judges/{j}/judge.json" for j in self.learned_judges()]

    def calibration_targets(self) -> list[str]:
        r = self.results
        return [f"{r}/judges/calibration.csv"] if self.config["judging"]["calibration"]["questions"] else []

    # --- where a rule runs, and with what ----------------------------------------------------
    def local(self, name: str) -> bool:
        return STAGES[name].local or name in self.api_local

    def vllm_models(self, name: str) -> list[str]:
        """The models of a stage that use backend vllm."""
        return sorted(m for m in pipeline.model_names(STAGES[name], self.config)
                      if self.config["models"][m]["backend"] == "vllm")

    def conda(self, name: str) -> str:
        """The rule's conda env file, from its stage's declaration (pipeline.conda_env: by its node class),
        or envs/vllm.yaml when a model the rule runs uses backend vllm."""
        return f"../envs/{'vllm' if self.vllm_models(name) else pipeline.conda_env(STAGES[name])}.yaml"

    def _resource(self, name: str, key: str):
        value = (self.config["resources"]["rules"].get(name) or {}).get(key)
        return value if value is not None else self.config["resources"]["default"][key]

    def threads(self, name: str) -> int:
        return self._resource(name, "threads")

    def mem_mb(self, name: str):
        return self._resource(name, "mem_mb")

    def runtime(self, name: str):
        return self._resource(name, "runtime")

    # --- files -----------------------------------------------------------------------------------
    def questions_file(self) -> str:
        """resources/data/<source>[-first<N>]-<digest>.jsonl, keyed by the settings that shape it
        (the source, its path and split, the limit) and nothing else: runs that differ in anything
        else share it."""
        q = self.config["questions"]
        shaping = pipeline.params(STAGES["prepare_questions"], self.config)["questions"]
        stem = q["source"] if q["source"] in ("ifbench", "composed") else Path(q["path"]).stem
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:8]
        limit = f"-first{q['limit']}" if q["limit"] else ""
        return f"{self.config['resources_dir']}/data/{stem}{limit}-{digest}.jsonl"

    def question_source(self) -> list[str]:
        """The source file (an input: adding a question to it reruns prepare_questions)."""
        q = self.config["questions"]
        if q["source"] == "ifbench":
            from judgeflow.questions.sources import ifbench_file

            return [pipeline.relpath_if_below(ifbench_file())]
        if q["source"] == "composed":  # the base tasks (the instructions come from the installed checkers)
            from judgeflow.questions.composed import tasks_file

            return [pipeline.relpath_if_below(tasks_file(q["composed"]["tasks"]))]
        if q["source"] == "jsonl" or Path(q["path"]).exists():  # hf_dataset: a local directory
            return [pipeline.relpath_if_below(q["path"])]
        return []  # hf_dataset: a dataset name (from the datasets cache; offline on a cluster)

    def shard_files(self, pattern: str) -> list[str]:
        return [pattern.format(shard=s) for s in self.shards]

    # --- refinement strategies: single, tree_search (rounds, gates) -------------------------------
    def strategies(self) -> list[str]:
        return list(self.config["refining"]["strategy"])

    def rounds(self) -> list[int]:
        return list(range(1, self.config["refining"]["tree_search"]["rounds"] + 1))

    def gates(self) -> list[str]:
        """The exit gates' names, loosest first: ["2of3", "3of3"]."""
        n = len(self.config["judging"]["judges"])
        return [gate_name(k, n) for k in sorted(g["k"] for g in self.config["refining"]["tree_search"]["gates"])]

    def tree_dir(self, round_) -> str:
        return f"{self.results}/tree_search/round-{round_}"

    def round_responses(self, wildcards) -> dict:
        """A round's responses and the judges' verdicts on them: round 1's are the workflow's own
        (sample_responses, judge_responses); round r >= 2's come from its actor (sample_round, judge_round)."""
        r, s = int(wildcards.round), wildcards.shard
        if r == 1:
            return {"responses": f"{self.results}/responses/shard-{s}.jsonl",
                    "verdicts": f"{self.results}/verdicts/responses/shard-{s}.jsonl",
                    "aggregate": f"{self.results}/verdicts/responses/shard-{s}.aggregate.jsonl"}
        d = self.tree_dir(r)
        return {"responses": f"{d}/responses/shard-{s}.jsonl", "verdicts": f"{d}/verdicts/shard-{s}.jsonl",
                "aggregate": f"{d}/verdicts/shard-{s}.aggregate.jsonl"}

    def round_trees(self, wildcards) -> list[str]:
        return self.shard_files(f"{self.tree_dir(wildcards.round)}/trees/shard-{{shard}}.jsonl")

    def all_rounds(self, what: str) -> list[str]:
        """Every round's (and gate's) file of one kind, for tree_search_summary."""
        out = []
        for r in self.rounds():
            d = self.tree_dir(r)
            if what in ("final", "comparisons"):
                out += [f"{d}/gate-{g}/{what}.jsonl" for g in self.gates()]
            elif what == "trees":
                out += self.shard_files(f"{d}/trees/shard-{{shard}}.jsonl")
            else:  # aggregates
                out += [self.round_responses(_Wildcards(round=r, shard=s))["aggregate"] for s in self.shards]
        return out

    def actor(self, wildcards) -> dict:
        """sample_round: round r's actor, trained in round r-1 (its model and training summary)."""
        d = f"{self.tree_dir(int(wildcards.round) - 1)}/dpo"
        return {"actor": f"{d}/model", "actor_summary": f"{d}/summary.json"}

    def round_training(self, wildcards) -> dict:
        """train_round: round r's pairs of the training gate, from round r's actor (the policy in round 1)."""
        r = int(wildcards.round)
        ts = self.config["refining"]["tree_search"]
        gate = gate_name(ts["train_gate"], len(self.config["judging"]["judges"]))
        out = {"pairs": f"{self.tree_dir(r)}/gate-{gate}/pairs.jsonl"}
        if r > 1:
            out["init"] = f"{self.tree_dir(r - 1)}/dpo/model"
        return out

    def variant_pairs(self, wildcards) -> dict:
        """train_dpo: a variant's pairs (a tree-search gate's: the last round's, trained from its actor)."""
        v = wildcards.variant
        if not v.startswith("tree_search_"):
            return {"pairs": f"{self.results}/pairs/{v}.jsonl"}
        last = self.rounds()[-1]
        out = {"pairs": f"{self.tree_dir(last)}/gate-{v.removeprefix('tree_search_')}/pairs.jsonl"}
        if last > 1:
            out["init"] = f"{self.tree_dir(last - 1)}/dpo/model"
        return out

    def targets(self) -> list[str]:
        """What `rule all` asks for besides the report's files."""
        r = self.results
        out = [f"{r}/evaluation/evaluation.json"]
        if "single" in self.strategies():
            out += [f"{r}/pairs/{m}.jsonl" for m in self.config["refining"]["modes"]] + [f"{r}/pairs/summary.csv"]
        if "tree_search" in self.strategies():
            out += [f"{r}/tree_search/gates.csv"]
        return out + self.calibration_targets()

    def variant_files(self, pattern: str) -> list[str]:
        return [pattern.format(variant=v) for v in self.config["training"]["variants"]]

    def policies(self) -> list[str]:
        return ["base", *self.config["training"]["variants"]]

    def policy_files(self, pattern: str) -> list[str]:
        return [pattern.format(policy=p) for p in self.policies()]

    def oracle_label_files(self) -> list[str]:
        """The oracle's labels of draws: the strategy's (and the curve's), then Best-of-N's."""
        r = self.results
        return [f"{r}/oracle/labels.jsonl"] + ([f"{r}/oracle/bon_labels.jsonl"]
                                                if self.config["oracle"]["bon"]["enabled"] else [])

    def strategy_proxy(self) -> list[str]:
        """label_oracle: the proxy scores a prediction-powered strategy reads (else none)."""
        o = self.config["oracle"]
        return [f"{self.results}/oracle/proxy-{o['proxy']}.jsonl"] if o["strategy"] == "prediction_powered" else []

    def proxy_sources(self) -> list[str]:
        """The proxy sources scored: the judges' always (they are free), and oracle.proxy's model."""
        p = self.config["oracle"]["proxy"]
        return ["judges"] + ([p] if p not in ("none", "judges") else [])

    def proxy_sources_pattern(self) -> str:
        return "|".join(re.escape(s) for s in self.proxy_sources())

    def replay_proxies(self) -> list[str]:
        return [f"{self.results}/oracle/proxy-{s}.jsonl" for s in self.proxy_sources()]

    def probe_predictions(self) -> list[str]:
        return [f"{self.results}/probe/predictions.jsonl"] if self.config["probe"]["enabled"] else []

    def report_sections(self) -> list[tuple[str, list[str]]]:
        """(heading, [files]) of the report, for the stages this config runs."""
        r = self.results
        s = [("Questions", [f"{r}/questions/cleaning.json"])]
        if self.calibration_targets():
            s.append(("Judges on the calibration split (random responses of the policy; learned judges out of fold)",
                      [f"{r}/judges/calibration.csv", f"{r}/judges/calibration.json"]))
        if "single" in self.strategies():
            s.append(("Preference pairs", [f"{r}/pairs/summary.json", f"{r}/pairs/summary.csv"]))
        if "tree_search" in self.strategies():
            t = f"{r}/tree_search"
            s.append(("Tree search (SPaR): exit gates, the oracle's preference and pass rate by depth",
                      [f"{t}/gates.png", f"{t}/gates.csv", f"{t}/depth.csv", f"{t}/summary.json"]))
        s += [("DPO training: gradient weights per pair",
              [f"{r}/dpo/diagnostics.png", f"{r}/dpo/training.csv", f"{r}/dpo/diagnostics.csv"]),
             ("Evaluation on held-out questions", [f"{r}/evaluation/table.csv", f"{r}/evaluation/evaluation.json"])]
        if self.config["draws"]["enabled"]:
            s.append(("Oracle: TP(N) and N*", [f"{r}/oracle/tp_curve.png", f"{r}/oracle/tp_curve.csv",
                                               f"{r}/oracle/nstar.json", f"{r}/oracle/fit.json"]))
            s.append(("Judges against the oracle on the labelled draws (selected by the judges' own accepts: "
                      "p1 and p0 are biased; the calibration split's are not)",
                      [f"{r}/judges/quality.csv", f"{r}/judges/agreement.csv", f"{r}/judges/quality.json"]))
            if self.config["oracle"]["bon"]["enabled"]:
                s.append(("Best-of-N", [f"{r}/oracle/bon_grid.png", f"{r}/oracle/bon_grid.csv",
                                        f"{r}/oracle/bon_kept.png", f"{r}/oracle/bon_kept.csv"]))
            if self.config["oracle"]["replay_runs"]:
                s.append(("Oracle calls with and without a proxy (replayed on the labelled pool)",
                          [f"{r}/oracle/replay.csv", f"{r}/oracle/replay.json"]))
            if self.config["probe"]["enabled"]:
                s.append(("Activation probe: p, p0, p1 from the policy's hidden state (out of fold)",
                          [f"{r}/probe/metrics.csv", f"{r}/probe/metrics.json"]))
        return s

    def headline_files(self) -> dict[str, str]:
        """The summary files the report's headline panel reads (each is also one of its inputs)."""
        r = self.results
        out = {"cleaning": f"{r}/questions/cleaning.json", "evaluation": f"{r}/evaluation/evaluation.json"}
        if "single" in self.strategies():
            out["pairs"] = f"{r}/pairs/summary.json"
        if "tree_search" in self.strategies():
            out["tree_search"] = f"{r}/tree_search/summary.json"
        if self.config["draws"]["enabled"]:
            out.update(nstar=f"{r}/oracle/nstar.json", fit=f"{r}/oracle/fit.json", judges=f"{r}/judges/quality.json")
            if self.config["oracle"]["bon"]["enabled"]:
                out["bon_kept"] = f"{r}/oracle/bon_kept.csv"
            if self.config["oracle"]["replay_runs"]:
                out["replay"] = f"{r}/oracle/replay.json"
            if self.config["probe"]["enabled"]:
                out["probe"] = f"{r}/probe/metrics.json"
        return out

    def report_files(self) -> list[str]:
        return [f for _, files in self.report_sections() for f in files]

    def policy_inputs(self, wildcards) -> dict:
        """evaluate_responses: a trained variant's model and training summary (the base: none)."""
        p = wildcards.policy
        if p == "base":
            return {}
        return {"trained": f"{self.results}/dpo/{p}/model", "summary": f"{self.results}/dpo/{p}/summary.json"}
