"""The configuration, typed: one class per config section, each default and description once.

`load(path)` / `validate(raw)` turn a YAML config into a `Settings` object (or a `ConfigError`
naming the config key). config/schema.json and docs/config.md are generated from these classes
(`python -m judgeflow.settings --write`; tests/test_settings.py checks they are current).

What a setting is for decides how a change to it reruns the workflow:

* most settings shape a stage's outputs. The stages that read one declare it
  (`judgeflow.pipeline`), it reaches them as a Snakemake param, and a change reruns them;
* a few only tune how a stage runs, never what it writes (`operational` below: timeouts,
  concurrency, batch sizes, checkpoint frequency). They reach the stage too, but a change
  reruns nothing.

Settings left null that mean "the same as another setting" (`draws.model` = `sampling.model`,
...) are resolved here, once; `Settings.derived` says which value came from where.
"""
from __future__ import annotations

import difflib
import json
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .models.base import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ID_PATTERN = r"^[A-Za-z0-9._-]+$"
# keys that would put a secret into the config (and from there into .snakemake/metadata and logs)
SECRET_KEYS = re.compile(r"^(api[_-]?key|key|token|access[_-]?token|secret|password|bearer)$", re.IGNORECASE)
GENERIC_PREFIX = "generic:"


def op(default: Any, description: str, **kw) -> Any:
    """An operational setting: it changes how a stage runs, never what it writes (no rerun)."""
    return Field(default, description=description, json_schema_extra={"operational": True}, **kw)


class Section(BaseModel):
    # lax: `--config key={a: 1}` reaches the workflow with every nested value a string (Snakemake parses
    # it with YAML's BaseLoader), so "1" must read as 1 and "true" as true; a word stays an error
    model_config = ConfigDict(extra="forbid", validate_default=True, coerce_numbers_to_str=True)

    @classmethod
    def operational_fields(cls) -> set[str]:
        return {n for n, f in cls.model_fields.items()
                if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("operational")}


# ------------------------------------------------------------------------------------- models


class PrepareModel(Section):
    gguf_package: str = Field(description="installed package that ships the GGUF file (found without importing it)")
    gguf_file: str = Field(description="file name of the GGUF inside that package")


class Prepare(Section):
    models: dict[str, PrepareModel] = Field(
        default_factory=dict,
        description="name -> GGUF in an installed package; built into <resources_dir>/models/<name> (prepare_model)")


class HFModel(Section):
    """A transformers model in the job's own process."""
    backend: Literal["hf"]
    path: str = Field(description="a transformers model directory")
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = op(16, "prompts per generate() call (draws do not depend on it: one seeded "
                             "generator per row)", ge=1)


class Serve(Section):
    path: str = Field(description="the transformers model directory `transformers serve` loads")
    device: str = "cpu"
    port: int | None = op(None, "null = a free port")
    startup_timeout: float = op(180, "seconds to wait for the server to answer", gt=0)


class OpenAIModel(Section):
    """An OpenAI-compatible endpoint (OpenAI, DeepSeek, vLLM, `transformers serve`)."""
    backend: Literal["openai"]
    model: str = Field(description="the model name sent to the endpoint")
    base_url: str | None = Field(None, description="the endpoint, e.g. https://api.openai.com/v1 (or a serve: block)")
    serve: Serve | None = Field(None, description="start `transformers serve` on 127.0.0.1 inside the job instead")
    send_seed: bool = Field(True, description="send each request's seed (reproducible draws where supported)")
    api_key_env: str | None = op(None, "NAME of the environment variable holding the API key (never the key)")
    max_concurrency: int = op(8, "API calls in flight at most", ge=1)
    timeout: float = op(120, "seconds per attempt (connect, each read)", gt=0)
    max_retries: int = op(5, "retries of one call (transient errors, malformed or empty answers)", ge=0)

    @model_validator(mode="after")
    def _endpoint(self):
        if not self.base_url and not self.serve:
            raise ValueError("base_url: required for the openai backend (or a serve: block to start a local server)")
        return self


ModelSpec = Annotated[HFModel | OpenAIModel, Field(discriminator="backend")]
BACKENDS = ("hf", "openai")


# ----------------------------------------------------------------------------------- sections


class Questions(Section):
    source: Literal["ifbench", "jsonl", "hf_dataset"] = "ifbench"
    path: str | None = Field(None, description="jsonl: a JSONL file; hf_dataset: a datasets directory or name")
    split: str = Field("train", description="hf_dataset: the split")
    limit: int | None = Field(None, ge=1, description="the first N questions of the source; null = all")
    max_prompt_chars: int | None = Field(20000, ge=1, description="longer prompts are rejected (with the reason)")
    heldout: int = Field(0, ge=0, description="kept questions set aside to evaluate trained policies "
                                              "(results/<run>/questions/heldout.jsonl), never sampled for pairs")

    @model_validator(mode="after")
    def _path(self):
        if self.source != "ifbench" and not self.path:
            raise ValueError(f"path: required when questions.source is '{self.source}'")
        return self


class Cleaning(Section):
    enabled: bool = True
    model: str = Field("oracle", description="models key of the oracle that keeps or rejects each question")
    template: str = Field("clean", description="packaged template name or a .txt path with {question}")
    on_abstain: Literal["keep", "reject"] = "keep"
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.0, ge=0)


class Sampling(Section):
    model: str = Field("policy", description="models key of the policy")
    n_samples: int = Field(4, ge=1, description="responses per kept question")
    shards: int = Field(1, ge=1, description="jobs that share the questions (every shards-th question)")
    system_prompt: str | None = None
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    checkpoint_every: int = op(64, "responses per checkpointed batch", ge=1)


class Judge(Section):
    id: str = Field(pattern=ID_PATTERN)
    model: str
    template: str = Field("judge", description="packaged name or .txt path with {question}, {response}, {criterion}")
    answer_first: bool = Field(False, description="hf only: the answer turn starts with 'Verdict:'")
    seed: int = 0
    max_new_tokens: int = Field(40, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)


class GenericCriterion(Section):
    criterion_id: str = Field(pattern=r"^generic:[A-Za-z0-9._:-]+$",
                              description="starts with 'generic:' (a question's own criteria never do)")
    description: str = Field(min_length=1)


class Judging(Section):
    k: int = Field(1, ge=1, description="k-of-J: a criterion passes when at least k of the J judges say YES")
    force_verdict: bool = True
    judges: list[Judge] = Field(min_length=1)
    generic_criteria: list[GenericCriterion] = Field(default_factory=list)

    @model_validator(mode="after")
    def _judges(self):
        ids = [j.id for j in self.judges]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"judges: duplicate judge ids {dup}")
        if self.k > len(self.judges):
            raise ValueError(f"k: {self.k} exceeds the number of judges J={len(self.judges)}")
        cids = [c.criterion_id for c in self.generic_criteria]
        dup = sorted({c for c in cids if cids.count(c) > 1})
        if dup:
            raise ValueError(f"generic_criteria: duplicate criterion ids {dup}")
        return self


RefineMode = Literal["multi_feedback", "full_feedback"]


class Refining(Section):
    model: str = Field("policy", description="models key of the refiner")
    modes: list[RefineMode] = Field(default_factory=lambda: ["multi_feedback", "full_feedback"], min_length=1)
    template_one: str = "refine_one"
    template_all: str = "refine_all"
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    checkpoint_every: int = op(64, "refinements per checkpointed batch", ge=1)

    @model_validator(mode="after")
    def _unique(self):
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes: duplicate modes {self.modes}")
        return self


class Pairs(Section):
    require: Literal["targeted", "all"] = Field(
        "targeted", description="a refinement makes a pair when the judges accept it on the criteria it "
                                "targeted, or on all of the question's criteria")


class RuleResources(Section):
    threads: int | None = Field(None, ge=1)
    mem_mb: int | None = Field(None, ge=1)
    runtime: int | None = Field(None, ge=1, description="minutes")


class DefaultResources(Section):
    threads: int = Field(1, ge=1)
    mem_mb: int | None = Field(4000, ge=1)
    runtime: int = Field(60, ge=1, description="minutes")


class Resources(Section):
    """Scheduling only (threads, memory, time of each job): never a rerun trigger."""
    default: DefaultResources = Field(default_factory=DefaultResources)
    rules: dict[str, RuleResources] = Field(default_factory=dict, description="rule name -> its resources")


class Lora(Section):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, le=1)
    target_modules: str | list[str] = "all-linear"


class Diagnostics(Section):
    every_steps: int = Field(0, ge=0, description="also record per-pair margins every N steps (0 = start and end)")
    batch_size: int = Field(8, ge=1)


class Training(Section):
    """DPO of the policy on each pair dataset (train_dpo -> results/<run>/dpo/<variant>/)."""
    variants: list[RefineMode] = Field(default_factory=lambda: ["multi_feedback", "full_feedback"], min_length=1)
    model: str | None = Field(None, description="models key of the policy to train (an hf model); "
                                                "null = sampling.model")
    accelerate_config: str = Field("config/accelerate/cpu.yaml",
                                   description="accelerate config file: cpu.yaml, zero2.yaml, zero3.yaml")
    beta: float = Field(0.1, gt=0)
    loss_type: str = "sigmoid"
    learning_rate: float = Field(5.0e-7, gt=0)
    lr_scheduler_type: str = "linear"
    warmup_steps: float = Field(0, ge=0, description="an integer number of steps, or a ratio < 1 of the total")
    weight_decay: float = Field(0.0, ge=0)
    max_steps: int | None = Field(200, ge=1, description="optimizer steps of every variant; null = num_train_epochs")
    num_train_epochs: float = Field(1, gt=0)
    per_device_train_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int | None = Field(1024, ge=2)
    gradient_checkpointing: bool = True
    bf16: bool | None = Field(None, description="null = bf16 on a GPU that supports it, fp32 on CPU")
    precompute_ref_log_probs: bool = False
    lora: Lora = Field(default_factory=Lora)
    min_pairs: int = Field(16, ge=1)
    on_too_few: Literal["error", "skip"] = "error"
    diagnostics: Diagnostics = Field(default_factory=Diagnostics)
    extra: dict[str, Any] = Field(default_factory=dict, description="more trl.DPOConfig fields, passed as they are")
    save_steps: int = op(50, "checkpoint every N steps (a killed job resumes from the last one)", ge=1)
    keep_checkpoints: bool = op(False, "keep checkpoints/ after a successful run")

    @model_validator(mode="after")
    def _checks(self):
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants: duplicate variants {self.variants}")
        if self.lora.enabled and self.lora.target_modules in ("lm_head", ["lm_head"]):
            raise ValueError("lora.target_modules: TRL's DPOTrainer cannot train an adapter on lm_head")
        return self


class Evaluation(Section):
    n_samples: int = Field(1, ge=1)
    max_new_tokens: int | None = Field(None, ge=1, description="null = sampling.max_new_tokens")
    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    judges: bool = Field(True, description="judge pass rates with judging.judges and judging.k")
    oracle: str | None = Field("oracle", description="models key of the pairwise oracle; null = none")
    oracle_template: str = "pairwise"
    oracle_max_new_tokens: int = Field(64, ge=1)
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the win-rate interval (Clopper-Pearson)")


class Draws(Section):
    enabled: bool = Field(True, description="run the TP(N) / Best-of-N stages")
    model: str | None = Field(None, description="policy model key; null = sampling.model")
    n_max: int = Field(8, ge=1)
    min_draws: int = Field(0, ge=0)
    max_new_tokens: int | None = Field(None, ge=1, description="null = sampling.max_new_tokens")


class Bon(Section):
    enabled: bool = True
    n: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4, 8])
    j: list[Annotated[int, Field(ge=1)]] | None = Field(None, description="judge counts; null = 1..J")


class Oracle(Section):
    labeller: str = Field("verifier", description="'verifier' (exact checkers) or a models key (an LLM oracle)")
    template: str = "oracle_label"
    max_new_tokens: int = Field(96, ge=1)
    strategy: Literal["uniform", "bisection", "fixed_sequence"] = "fixed_sequence"
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    threshold: float = Field(0.8, gt=0, lt=1, description="T: certify N* with TP(n) >= T")
    delta: float = Field(0.05, gt=0, lt=1, description="1 - confidence")
    budget: int = Field(1000, ge=0, description="oracle calls at most")
    batch_size: int = Field(32, ge=1, description="labels asked per round (the strategy sees them together)")
    label_all_accepted: bool = False
    interval: Literal["hoeffding", "clopper_pearson", "betting"] = "clopper_pearson"
    bon: Bon = Field(default_factory=Bon)


class Cluster(Section):
    """Running on SLURM (profiles/slurm, docs/cluster.md); site values are JUDGEFLOW_SLURM_* variables."""
    api_rules_local: Literal["auto", "always", "never"] = "auto"
    api_rules: dict[str, str | list[str]] = Field(
        default_factory=lambda: {"clean_questions": "cleaning.model", "label_oracle": "oracle.labeller",
                                 "best_of_n": "oracle.labeller", "evaluate_policies": "evaluation.oracle"},
        description="rule -> config key(s) whose value names the model(s) it calls")
    internal_hosts: list[str] = Field(default_factory=list)


class Settings(Section):
    """judgeflow configuration."""
    run: str = Field("demo", pattern=ID_PATTERN, description="results/<run>/ holds this run")
    seed: int = 0
    results_dir: str = "results"
    resources_dir: str = "resources"
    logs_dir: str = "logs"
    benchmarks_dir: str = "benchmarks"
    cache_dir: str = op("cache", "API-call cache shared across runs")
    prepare: Prepare = Field(default_factory=Prepare)
    questions: Questions = Field(default_factory=Questions)
    models: dict[str, ModelSpec] = Field(min_length=1)
    cleaning: Cleaning = Field(default_factory=Cleaning)
    sampling: Sampling = Field(default_factory=Sampling)
    judging: Judging
    refining: Refining = Field(default_factory=Refining)
    pairs: Pairs = Field(default_factory=Pairs)
    resources: Resources = Field(default_factory=Resources)
    training: Training = Field(default_factory=Training)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    draws: Draws = Field(default_factory=Draws)
    oracle: Oracle = Field(default_factory=Oracle)
    cluster: Cluster = Field(default_factory=Cluster)

    def model_roles(self) -> dict[str, str]:
        """{config key: model name} of every role that names a model."""
        roles = {"sampling.model": self.sampling.model, "refining.model": self.refining.model,
                 "training.model": self.training.model}
        if self.cleaning.enabled:
            roles["cleaning.model"] = self.cleaning.model
        for i, j in enumerate(self.judging.judges):
            roles[f"judging.judges[{i}].model"] = j.model
        if self.draws.enabled:
            roles["draws.model"] = self.draws.model
            if self.oracle.labeller != "verifier":
                roles["oracle.labeller"] = self.oracle.labeller
        if self.evaluation.oracle:
            roles["evaluation.oracle"] = self.evaluation.oracle
        return roles


# --------------------------------------------------------------------------- null = another key

# (key, the key whose value it takes when null); resolved in this order
DEFAULTS_FROM = (("draws.model", "sampling.model"), ("training.model", "sampling.model"),
                 ("draws.max_new_tokens", "sampling.max_new_tokens"),
                 ("evaluation.max_new_tokens", "sampling.max_new_tokens"))


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for part in head:
        obj = getattr(obj, part)
    object.__setattr__(obj, last, value)


def _resolve(s: Settings) -> dict[str, str]:
    derived = {}
    for key, source in DEFAULTS_FROM:
        if _get(s, key) is None:
            _set(s, key, _get(s, source))
            derived[key] = source
    return derived


def _cross_checks(s: Settings) -> None:
    """Checks across sections, each error naming its config key."""
    for key, name in s.model_roles().items():
        if name not in s.models:
            if key == "oracle.labeller":
                raise ConfigError(f"oracle.labeller: '{name}' is neither 'verifier' nor a model "
                                  f"(defined under models: {', '.join(sorted(s.models))})")
            raise ConfigError(f"{key}: unknown model '{name}'{_closest(name, s.models)} "
                              f"(defined under models: {', '.join(sorted(s.models))})")
    for i, j in enumerate(s.judging.judges):
        if j.answer_first and s.models[j.model].backend != "hf":
            raise ConfigError(f"judging.judges[{i}].answer_first: needs an hf model (an API cannot be made to "
                              f"continue 'Verdict:'); model '{j.model}' is {s.models[j.model].backend}")
    policy = s.models[s.training.model]
    if policy.backend != "hf":
        raise ConfigError(f"training.model: DPO trains a local transformers model; models.{s.training.model} "
                          "is not an hf model with a path")
    if s.draws.enabled:
        if s.draws.min_draws > s.draws.n_max:
            raise ConfigError(f"draws.min_draws: {s.draws.min_draws} exceeds draws.n_max={s.draws.n_max}")
        bon = s.oracle.bon
        if bon.enabled and max(bon.n, default=0) > s.draws.min_draws:
            raise ConfigError(f"oracle.bon.n: N up to {max(bon.n)} needs every question drawn that often; "
                              f"raise draws.min_draws (now {s.draws.min_draws}) or lower the N grid")
        for J in bon.j or []:
            if len(s.judging.judges) < J:
                raise ConfigError(f"oracle.bon.j: J={J} exceeds the number of judges ({len(s.judging.judges)})")
    from .pipeline import STAGES

    for key, names in (("resources.rules", s.resources.rules), ("cluster.api_rules", s.cluster.api_rules)):
        for name in names:
            if name not in STAGES:
                raise ConfigError(f"{key}.{name}: no rule '{name}'{_closest(name, STAGES)} "
                                  f"(rules: {', '.join(STAGES)})")


# ------------------------------------------------------------------------------------ loading


class Validated(dict):
    """The validated configuration as a plain dict (defaults filled, nulls resolved), plus
    `derived`: {key: the key its value was taken from}."""
    derived: dict[str, str]


def validate(raw: dict) -> Validated:
    """Check a raw config (unknown keys, secrets, types, values, cross-field rules) and return it
    validated; a `ConfigError` names the config key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of settings, got {type(raw).__name__}")
    _check_secrets(raw)
    _check_keys(raw, Settings, "")
    try:
        s = Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
    derived = _resolve(s)
    _cross_checks(s)
    out = Validated(s.model_dump(mode="json"))
    out.derived = derived
    return out


def load(path: str | Path, overrides: dict | None = None) -> Validated:
    """Read a YAML config file, merge `overrides` into it, validate."""
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate(raw)


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ------------------------------------------------------------------------------------ errors


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _closest(name: str, choices) -> str:
    m = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{m[0]}'?)" if m else ""


def _check_secrets(raw: dict) -> None:
    models = raw.get("models")
    if not isinstance(models, dict):
        return
    for name, spec in models.items():
        stack = [(f"models.{name}", spec)]
        while stack:
            where, node = stack.pop()
            if not isinstance(node, dict):
                continue
            for k, v in node.items():
                if SECRET_KEYS.match(str(k)):
                    raise ConfigError(
                        f"{where}.{k}: a secret does not belong in the config (it would be stored in "
                        f".snakemake/metadata and the logs). Put it in an environment variable and name "
                        f"that variable with models.{name}.api_key_env, e.g. api_key_env: OPENAI_API_KEY")
                stack.append((f"{where}.{k}", v))


def _unwrap(tp):
    """The model class(es) a field annotation holds, through Optional/Annotated/list/dict."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        classes = [c for a in get_args(tp) if (c := _unwrap(a)) is not None]
        return classes[0] if len(classes) == 1 else (tuple(classes) or None)
    if origin in (list, dict):
        return ("container", origin, _unwrap(get_args(tp)[-1]))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _model_classes(shape) -> list[type]:
    """The model classes a shape (from _unwrap) holds."""
    if isinstance(shape, type):
        return [shape]
    if isinstance(shape, tuple) and shape and shape[0] == "container":
        return _model_classes(shape[2])
    if isinstance(shape, tuple):
        return [c for x in shape for c in _model_classes(x)]
    return []


def _check_keys(data, shape, where: str) -> None:
    """Every key of `data` exists in `shape`; the error names the key and the closest valid one."""
    if shape is None or data is None:
        return
    if isinstance(shape, tuple) and shape and shape[0] == "container":
        _, origin, inner = shape
        if origin is dict and isinstance(data, dict):
            for k, v in data.items():
                _check_keys(v, inner, f"{where}.{k}")
        elif origin is list and isinstance(data, list):
            for i, v in enumerate(data):
                _check_keys(v, inner, f"{where}[{i}]")
        return
    if isinstance(shape, tuple):  # a discriminated union of models (the model backends)
        if not isinstance(data, dict):
            return
        by_tag = {c.model_fields["backend"].annotation.__args__[0]: c for c in shape}
        tag = data.get("backend")
        if tag not in by_tag:
            raise ConfigError(f"{where}.backend: unknown backend {tag!r}{_closest(tag, by_tag)} "
                              f"(expected one of {', '.join(by_tag)})")
        shape = by_tag[tag]
    if not isinstance(data, dict):
        return
    fields = shape.model_fields
    for k, v in data.items():
        here = f"{where}.{k}" if where else str(k)
        if k not in fields:
            raise ConfigError(f"config key {here}: unknown key{_closest(k, fields)} "
                              f"(valid keys here: {', '.join(fields)})")
        _check_keys(v, _unwrap(fields[k].annotation), here)


def _describe(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = [p for p in err["loc"] if p not in BACKENDS]  # the union's tag is not part of the key
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and ":" in msg.split(" ")[0]:  # a model validator naming its field
        field, _, rest = msg.partition(":")
        return f"config key {_key([*loc, field])}:{rest}"
    if err["type"] == "missing":
        hint = ("; a config file given with --configfile is the whole config (the demo's config/config.yaml "
                "is not read then): to change the demo, name both, --configfile config/config.yaml yours.yaml"
                if len(loc) == 1 else "")
        return f"config key {_key(loc[:-1]) or '(top level)'}: '{loc[-1]}' is a required key{hint}"
    value = err.get("input")
    shown = repr(value) if isinstance(value, (int, float, str, bool)) or value is None else type(value).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"config key {_key(loc) or '(top level)'}: {msg} (got {shown})"


# ---------------------------------------------------------------------------- schema and docs


def json_schema() -> dict:
    schema = Settings.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def _type_name(tp) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin is Union or origin is types.UnionType:
        return " \\| ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[1])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "section"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def docs_markdown() -> str:
    """docs/config.md: every key, its type, default and description, from the classes."""
    lines = ["# Configuration reference", "",
             "Generated from `src/judgeflow/settings.py` (`python -m judgeflow.settings --write`); do not edit.",
             "", "*operational*: changes how a stage runs, never what it writes, so a change to it reruns nothing.",
             "Every other key reruns exactly the stages that read it (see `src/judgeflow/pipeline.py`) and what "
             "follows them.", ""]

    def walk(cls, prefix: str, heading: str, depth: int) -> None:
        doc = (cls.__doc__ or "").strip() if cls is not Settings else ""
        lines.extend([f"{'#' * min(depth, 4)} `{heading}`" + (f": {doc}" if doc else ""), "",
                  "| key | type | default | description |", "| --- | --- | --- | --- |"])
        nested = []
        for name, f in cls.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            default = f.get_default(call_default_factory=True)
            shown = "required" if f.is_required() else ("section" if isinstance(default, BaseModel) else
                                                       json.dumps(default) if default is not None else "null")
            desc = (f.description or "").replace("|", "\\|")
            if name in cls.operational_fields():
                desc = f"*operational*. {desc}"
            lines.append(f"| `{key}` | {_type_name(f.annotation)} | `{shown}` | {desc} |")
            shape = _unwrap(f.annotation)
            suffix = ""
            if isinstance(shape, tuple) and shape and shape[0] == "container":
                suffix = ".<name>" if shape[1] is dict else "[i]"
            for c in _model_classes(shape):
                tag = c.model_fields.get("backend")
                nested.append((c, key + suffix, key + suffix + (f" (backend: {tag.annotation.__args__[0]})"
                                                                if tag else "")))
        lines.append("")
        for c, k, h in nested:
            walk(c, k, h, depth + 1)

    walk(Settings, "", "top level", 2)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="write config/schema.json and docs/config.md from the classes")
    p.add_argument("--write", action="store_true")
    a = p.parse_args(argv)
    schema = json.dumps(json_schema(), indent=2) + "\n"
    if a.write:
        (ROOT / "config" / "schema.json").write_text(schema)
        (ROOT / "docs" / "config.md").write_text(docs_markdown())
    else:
        print(schema)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
