"""SLURM support that rules/cluster.smk runs while the Snakefile is parsed (unit-tested here).

- The site values of profiles/slurm (account, partitions, QoS, ...) are `JUDGEFLOW_SLURM_*`
  environment variables that the profile's resource values reference as `$VARIABLE`; Snakemake
  expands them when it evaluates a job's resources. They come from the environment or from one
  site file (`site_path`), defaults fill the optional ones, and a missing required one is an error
  naming the variable and the site-file key, raised before the DAG is built.
- Training over several nodes (train_nodes > 1): the profile's multi-node resources of the training
  rules and the accelerate config are checked before any job too (multinode_problems).
- Rules the profile does not map fall back to the CPU defaults and are named in a warning.
- Rules that call an oracle over a hosted API become `localrules` (compute nodes have no internet).
"""
from __future__ import annotations

import ipaddress
import os
import re
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlparse

PREFIX = "JUDGEFLOW_SLURM_"
SITE_ENV = "JUDGEFLOW_SLURM_SITE"
DEFAULT_SITE = "profiles/slurm/site.yaml"
REQUIRED = object()

# site-file key -> default: REQUIRED, a literal, or "=key" (the value of another key).
# The environment variable of a key is PREFIX + key.upper(); it wins over the site file.
SITE_KEYS: dict[str, object] = {
    "account": REQUIRED,            # account of CPU jobs (Jean Zay: <project>@cpu)
    "cpu_partition": REQUIRED,
    "gpu_partition": REQUIRED,
    "cpu_qos": "",
    "cpu_extra": "",                # extra sbatch flags, e.g. --hint=nomultithread
    "gpu_account": "=account",      # Jean Zay: <project>@a100 / @h100 / @v100
    "gpu_qos": "",
    "gpu_constraint": "",           # -C, e.g. a100
    "gpu_extra": "",
    "cpus_per_gpu": "8",
    "gpu_mem_mb": "0",              # per GPU; 0 = no --mem (refused on Jean Zay's GPU partitions)
    "train_account": "=gpu_account",
    "train_partition": "=gpu_partition",
    "train_qos": "=gpu_qos",
    "train_constraint": "=gpu_constraint",
    "train_extra": "=gpu_extra",
    "train_gpus": "4",              # GPUs of one train_dpo job on each of its nodes
    "train_cpus_per_gpu": "=cpus_per_gpu",
    "train_nodes": "1",             # nodes of one train_dpo job; > 1: one srun task per node (launch.py)
}
INTEGER_KEYS = {"cpus_per_gpu", "gpu_mem_mb", "train_gpus", "train_cpus_per_gpu", "train_nodes"}
POSITIVE_KEYS = {"train_nodes"}     # integers >= 1
# accelerate launch (judgeflow.stages.train_dpo.launch_command), training.accelerate_config
TRAIN_RULES = ("train_dpo", "train_round", "train_refiner")
# Jobs must never try the network for models: they are on disk already.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


class ClusterConfigError(ValueError):
    """A SLURM site value is missing or malformed (the message names the variable)."""


def env_name(key: str) -> str:
    return PREFIX + key.upper()


def referenced_variables(expressions) -> set[str]:
    """`$NAME` / `${NAME}` referenced in the profile's raw resource expressions."""
    out: set[str] = set()
    for expr in expressions:
        if isinstance(expr, str):
            out.update(_VAR.findall(expr))
    return out


def profile_expressions(resource_settings) -> list[str]:
    """Raw resource/thread expressions of --default-resources, --set-resources, --set-threads."""
    raw = []
    defaults = getattr(resource_settings, "default_resources", None)
    for res in (defaults.values() if defaults is not None else []):
        raw.append(getattr(res, "raw", None))
    for per_rule in (getattr(resource_settings, "overwrite_resources", None) or {}).values():
        raw.extend(getattr(res, "raw", None) for res in per_rule.values())
    for res in (getattr(resource_settings, "overwrite_threads", None) or {}).values():
        raw.append(getattr(res, "raw", None))
    return [r for r in raw if isinstance(r, str)]


def mapped_rules(resource_settings) -> set[str]:
    return set(getattr(resource_settings, "overwrite_resources", None) or {})


def site_file(environ, basedir: str | Path) -> Path | None:
    """The site file: $JUDGEFLOW_SLURM_SITE (must exist), else profiles/slurm/site.yaml if present."""
    named = environ.get(SITE_ENV)
    if named:
        p = Path(named)
        if not p.is_absolute() and not p.exists():
            p = Path(basedir) / named
        if not p.exists():
            raise ClusterConfigError(f"{SITE_ENV}={named}: no such site file")
        return p
    p = Path(basedir) / DEFAULT_SITE
    return p if p.exists() else None


def load_site(path: str | Path) -> dict[str, str]:
    """A flat YAML mapping of SITE_KEYS; values are strings or integers ($VARS expanded)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ClusterConfigError(f"{path}: expected a mapping of site keys")
    out = {}
    for key, value in data.items():
        if key not in SITE_KEYS:
            raise ClusterConfigError(f"{path}: unknown key {key!r} (known: {', '.join(SITE_KEYS)})")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ClusterConfigError(f"{path}: {key} must be a string or an integer, got {value!r}")
        out[key] = os.path.expandvars(str(value))
    return out


def resolve_site(environ, site: dict[str, str] | None = None, site_path=None) -> dict[str, str]:
    """Environment variable name -> value for every site key: environment, then site file,
    then defaults. Raises ClusterConfigError naming every required key that has no value."""
    site = site or {}
    values: dict[str, str] = {}
    missing, bad = [], []
    where = f" or `{{key}}:` in {site_path}" if site_path else f" or `{{key}}:` in a site file ({SITE_ENV})"
    for key, default in SITE_KEYS.items():  # defaults only refer to earlier keys
        name = env_name(key)
        value = environ.get(name)
        if value is None and key in site:
            value = site[key]
        if value is None:
            if default is REQUIRED:
                missing.append(key)
                continue
            derived = isinstance(default, str) and default.startswith("=")
            value = values.get(env_name(str(default)[1:]), "") if derived else default
        value = str(value).strip()
        if default is REQUIRED and not value:
            missing.append(key)
            continue
        if "$" in value:
            bad.append(f"{name}={value!r}: an unexpanded variable (is it exported?)")
            continue
        if key in POSITIVE_KEYS and not re.fullmatch(r"0*[1-9]\d*", value):
            bad.append(f"{name}={value!r} (site key {key}): must be a whole number >= 1")
            continue
        if key in INTEGER_KEYS and not re.fullmatch(r"\d+", value):
            bad.append(f"{name}={value!r}: must be a whole number")
            continue
        # as the profile's expressions read it: `$X > 1` is a SyntaxError for 08 (Snakemake keeps the text)
        values[name] = str(int(value)) if key in INTEGER_KEYS else value
    nodes, gpus = values.get(env_name("train_nodes"), "1"), values.get(env_name("train_gpus"), "1")
    if int(nodes) > 1 and int(gpus) < 1:
        bad.append(f"{env_name('train_gpus')}={gpus!r} (site key train_gpus): a training job over "
                   f"{env_name('train_nodes')}={nodes} nodes needs at least one GPU on each node")
    problems = [f"{env_name(k)} is not set (export {env_name(k)}=...{where.format(key=k)})"
                for k in missing] + bad
    if problems:
        raise ClusterConfigError("SLURM profile: no job was submitted:\n  " + "\n  ".join(problems)
                                 + "\nSee docs/cluster.md.")
    return values


def prepare_environment(expressions, environ, basedir) -> dict[str, str] | None:
    """If the profile's resources reference JUDGEFLOW_SLURM_* variables: resolve the site values,
    write them (and the offline flags) into `environ` (the jobs inherit it through sbatch
    --export=ALL) and return them. None when the profile is not a judgeflow SLURM profile."""
    refs = referenced_variables(expressions)
    ours = {v for v in refs if v.startswith(PREFIX)}
    if not ours:
        return None
    path = site_file(environ, basedir)
    values = resolve_site(environ, load_site(path) if path else {}, path)
    others = sorted(v for v in refs - set(values) if v not in environ)
    if others:
        raise ClusterConfigError("SLURM profile: the profile references unset variable(s) "
                                 + ", ".join(others) + ". No job was submitted.")
    environ.update(values)
    environ.update(OFFLINE_ENV)
    return values


# --- training over several nodes ---------------------------------------------------------------

def evaluate_expression(raw, environ):
    """A profile resource expression as Snakemake's cli_evaluator evaluates it ($VARS from `environ`,
    then Python; a NameError or SyntaxError leaves the text), for checks before any job."""
    if not isinstance(raw, str):
        return raw
    text = _VAR.sub(lambda m: environ.get(m.group(1), m.group(0)), raw)
    try:
        return eval(text, {})  # the profile's own expressions, as Snakemake evaluates them
    except (NameError, SyntaxError, TypeError, ValueError, ArithmeticError):
        return text


def multinode_problems(resource_settings, environ, config: dict | None = None, basedir: str | Path = ".") -> list[str]:
    """What keeps a rule the profile puts on several nodes from running, one line each, before any job:
    its resources (evaluated with `environ`'s site values) must ask for GPUs per node (gres=gpu:G; a
    whole-job gpu total may not split, and SLURM places it anyhow), the mpi resource (the job starts
    its one task per node itself), tasks = nodes and tasks_per_gpu = 0; and for a training rule of the
    config, training.accelerate_config must be one that can span nodes (launch.multinode_config_problem)."""
    from judgeflow.workflow.launch import gpus_per_node, multinode_config_problem

    out: list[str] = []
    multi: dict[str, int] = {}
    nodes_var = f"{env_name('train_nodes')}={environ.get(env_name('train_nodes'), '?')}"
    for rule, res in (getattr(resource_settings, "overwrite_resources", None) or {}).items():
        raw = {k: getattr(v, "raw", v) for k, v in res.items()}
        if "nodes" not in raw:
            continue
        val = {k: evaluate_expression(raw[k], environ)
               for k in ("nodes", "gres", "gpu", "mpi", "tasks", "tasks_per_gpu") if k in raw}
        val = {k: v for k, v in val.items() if v is not None}
        nodes = val.get("nodes")
        if nodes is None:
            continue
        where = f"set-resources {rule} ({nodes_var})" if rule in TRAIN_RULES else f"set-resources {rule}"
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            out.append(f"{where}: nodes={nodes!r} must be a whole number >= 1")
            continue
        if nodes == 1:
            continue
        multi[rule] = nodes
        try:
            per_node, _ = gpus_per_node(val, environ={})
        except (TypeError, ValueError) as e:
            out.append(f"{where}: {e}")
            continue
        if per_node < 1:
            out.append(f"{where}: nodes={nodes} with no GPU on each node (gres=gpu:<G>, JUDGEFLOW_SLURM_TRAIN_GPUS)")
        elif val.get("gpu"):
            out.append(f"{where}: gpu={val['gpu']} counts the GPUs of the whole job, which SLURM may place unevenly "
                       f"over nodes={nodes}: give gres=gpu:{per_node} and gpu=0")
        if "mpi" not in val:
            out.append(f"{where}: nodes={nodes} without the mpi resource (the job starts one task per node itself; "
                       "without it the plugin runs the job in a one-node srun step)")
        if val.get("tasks") != nodes or val.get("tasks_per_gpu") != 0:
            out.append(f"{where}: one task per node needs tasks={nodes} and tasks_per_gpu=0, got "
                       f"tasks={val.get('tasks')!r}, tasks_per_gpu={val.get('tasks_per_gpu')!r}")
    if config is not None and (train := [r for r in TRAIN_RULES if r in multi]):
        from judgeflow.training.dpo import accelerate_config_path, read_accelerate_config
        from judgeflow.workflow.pipeline import inactive_stages

        inactive = inactive_stages(config)
        active = [r for r in train if r not in inactive]
        if active:
            value = config["training"]["accelerate_config"]
            problem = multinode_config_problem(read_accelerate_config(accelerate_config_path(value, basedir)),
                                               max(multi[r] for r in active))
            if problem:
                out.append(f"training.accelerate_config: '{value}' {problem} ({nodes_var}; rules "
                           f"{', '.join(active)})")
    return out


def unmapped_rules(rule_names, local_rules, mapped) -> list[str]:
    """Rules that will be submitted with only the CPU defaults (not local, not in set-resources)."""
    return sorted(r for r in rule_names if r not in local_rules and r not in mapped)


# --- rules that call a hosted API ------------------------------------------------------------

def _host_is_internal(host: str, internal_hosts) -> bool:
    if not host:
        return False
    if host in ("localhost",) or host.endswith(".localhost") or ("." not in host and ":" not in host):
        return True  # localhost, or a single-label name such as gpu-node: the cluster's own
    try:
        ip = ipaddress.ip_address(host)
        return ip.is_loopback or ip.is_private or ip.is_link_local
    except ValueError:
        pass
    return any(fnmatch(host, pattern) for pattern in internal_hosts)


def model_is_hosted(spec: dict, internal_hosts=()) -> bool:
    """An `openai` model reached outside the cluster: no serve: block, and a base_url (or the
    OpenAI default) whose host is not loopback, private, single-label or in internal_hosts."""
    if spec.get("backend") != "openai" or spec.get("serve"):
        return False
    url = spec.get("base_url") or "https://api.openai.com/v1"
    return not _host_is_internal(urlparse(url).hostname or "", internal_hosts)


def api_local_rules(config: dict, mode: str | None = None) -> list[str]:
    """Rules to run on the login node (compute nodes have no internet), per `cluster.api_rules_local`:
    auto: every active stage that runs a hosted model through any role its declaration names
    (`Stage.models`: judges, refiner, oracle, comparer, proxy...), plus the `cluster.api_rules` entries
    whose models are hosted; always: every active stage that runs a model over the openai backend
    (hosted, inside the cluster or served), plus every `cluster.api_rules` entry; never: none."""
    cl = config.get("cluster") or {}
    mode = mode or cl.get("api_rules_local", "auto")
    if mode == "never":
        return []
    from judgeflow.workflow.pipeline import STAGES, inactive_stages, model_names, select

    inactive, internal = inactive_stages(config), cl.get("internal_hosts", ())

    def calls_api(names) -> bool:
        specs = [config["models"][n] for n in names if isinstance(n, str) and n in config["models"]]
        if mode == "always":
            return any(spec.get("backend") == "openai" for spec in specs)
        return any(model_is_hosted(spec, internal) for spec in specs)

    out = {name for name, stage in STAGES.items() if name not in inactive and calls_api(model_names(stage, config))}
    for rule, keys in (cl.get("api_rules") or {}).items():
        if rule in inactive:
            continue
        names = []
        for key in [keys] if isinstance(keys, str) else keys:
            for _, value in select(config, key):
                names += value if isinstance(value, list) else [value]
        if mode == "always" or calls_api(names):
            out.add(rule)
    return sorted(out)


def compute_node_api_notice(config: dict) -> str | None:
    """With `cluster.api_rules_local: never`, one line naming the rules that will call a hosted API
    from compute nodes (those auto would run on the login node); None otherwise or when there are none."""
    if (config.get("cluster") or {}).get("api_rules_local", "auto") != "never":
        return None
    rules = api_local_rules(config, mode="auto")
    if not rules:
        return None
    return (f"SLURM: cluster.api_rules_local is never: {len(rules)} rule(s) will call a hosted API from "
            f"compute nodes, which must reach the internet: {', '.join(rules)}")


# --- the Snakefile's hooks (public Snakemake API only) -------------------------------------------


def command_line_configfiles(workflow) -> list[str]:
    """The config files named on the command line (--configfile), as the Snakemake API passes them
    (snakemake.settings.types.ConfigSettings); the same list reaches every cluster job."""
    settings = getattr(workflow, "config_settings", None)
    if settings is None or not hasattr(settings, "configfiles"):
        raise RuntimeError("this Snakemake version does not expose workflow.config_settings.configfiles "
                           "(judgeflow needs Snakemake >=9,<10)")
    return [str(f) for f in settings.configfiles or []]


def site_values(workflow) -> dict[str, str] | None:
    """The SLURM site values when this is a run with the judgeflow SLURM profile (else None); a
    missing required value stops the parse with an error naming it."""
    from snakemake.exceptions import WorkflowError

    if workflow.remote_exec:
        return None
    try:
        values = prepare_environment(profile_expressions(workflow.resource_settings), os.environ, workflow.basedir)
    except ClusterConfigError as e:
        raise WorkflowError(str(e)) from None
    if values is not None:
        problems = multinode_problems(workflow.resource_settings, os.environ, workflow.config, workflow.basedir)
        if problems:
            raise WorkflowError("SLURM profile: no job was submitted:\n  " + "\n  ".join(problems)
                                + "\nSee docs/cluster.md, \"Several nodes for DPO\".")
    return values


def snakemake_local_rules(workflow) -> list[str]:
    """The rules Snakemake itself will run where it runs, not as cluster jobs: those its `localrule:`
    directive or `localrules` marked (Workflow._localrules, the one Snakemake internal judgeflow reads;
    tests/test_slurm_profile.py fails if it changes), plus rules with nothing to run."""
    marked = getattr(workflow, "_localrules", None)
    if not isinstance(marked, set):
        raise RuntimeError("this Snakemake version keeps no Workflow._localrules set (judgeflow needs Snakemake "
                           ">=9,<10)")
    return sorted(rule.name for rule in workflow.rules if rule.name in marked or rule.norun)


def stage_rule_problems(rule_names, proxies) -> list[str]:
    """What is wrong with the stage rules among `rule_names`, one line each: a rule whose `settings` param
    (rulekit.StageSettings, from `params: **S.params`) is another stage's, or comes from no stage.
    `proxies`: Snakemake's rule proxies (the Snakefile's `rules`; `rules.<name>.params`)."""
    from judgeflow.workflow.pipeline import STAGES

    out = []
    for name in rule_names:
        if name not in STAGES:
            continue
        settings = getattr(getattr(proxies, name).params, "settings", None)
        stage = getattr(settings, "stage", None)
        if stage is None:
            out.append(f"rule {name}: its settings param does not come from its stage: write "
                       f"S = JF.stage(\"{name}\") just above the rule, and params: **S.params")
        elif stage != name:
            out.append(f"rule {name} takes its declarations from JF.stage(\"{stage}\"), the stage of another rule: "
                       f"write S = JF.stage(\"{name}\") just above the rule")
    return out


def check_stage_rules(proxies, workflow) -> None:
    """Stop the parse, naming the rule, when a stage rule took its declarations (params, resources, threads,
    conda env, inputs: its `S`) from another stage's JF.stage (see stage_rule_problems)."""
    from snakemake.exceptions import WorkflowError

    problems = stage_rule_problems([rule.name for rule in workflow.rules], proxies)
    if problems:
        raise WorkflowError("\n".join(problems))


def after_parse(rules, site: dict | None, workflow) -> None:
    """After the last include: check that every stage rule took its declarations from its own stage
    (check_stage_rules); on SLURM, say which rules run on this node (a hosted API), warn about a
    login-node rule that would also run a local model the profile gives a GPU, about rules the profile
    gives no resources of their own, and (api_rules_local: never) about rules calling a hosted API from
    compute nodes."""
    from snakemake.logging import logger

    from judgeflow.workflow.pipeline import STAGES, inactive_stages, model_names

    check_stage_rules(rules.rules, workflow)
    if site is None:
        return
    resource_settings = workflow.resource_settings
    active = {name for name in STAGES if name not in inactive_stages(rules.config)}
    if rules.api_local:
        logger.info("SLURM: calling a hosted API, run on this node (localrules): " + ", ".join(sorted(rules.api_local)))
    logger.info("SLURM: rules run on this node, not as jobs: "
                + ", ".join(r for r in snakemake_local_rules(workflow) if r in active))
    models = rules.config["models"]
    for name in sorted(set(rules.api_local) & gpu_rules(resource_settings)):
        local_models = [m for m in model_names(STAGES[name], rules.config)
                        if models[m]["backend"] != "openai" or models[m].get("serve")]
        if local_models:
            logger.warning(f"SLURM: rule {name} runs on this node (it calls a hosted API) and also runs "
                           f"{', '.join(local_models)}, which the profile gives a GPU for: serve "
                           f"{'it' if len(local_models) == 1 else 'them'} inside the cluster (an openai model with an "
                           "internal base_url) or make every model of the rule hosted")
    if notice := compute_node_api_notice(rules.config):
        logger.warning(notice)
    local = {name for name in active if rules.local(name)}
    unmapped = unmapped_rules(active, local, mapped_rules(resource_settings))
    if unmapped:
        logger.warning("SLURM profile: no per-rule resources for " + ", ".join(unmapped)
                       + "; they get the CPU defaults (default-resources). "
                       "Map them under set-resources in profiles/slurm/config.yaml.")


def gpu_rules(resource_settings) -> set[str]:
    """Rules the profile gives GPUs (set-resources with a gpu or gres resource that is not 0)."""
    out = set()
    for rule, res in (getattr(resource_settings, "overwrite_resources", None) or {}).items():
        for key in ("gpu", "gres"):
            if key in res:
                raw = getattr(res[key], "raw", res[key])
                if str(raw).strip() not in ("0", "None", ""):
                    out.add(rule)
    return out


def vllm_problems(rules, *, uses_conda: bool, on_slurm: bool, gpu_rules_: set[str], vllm_installed: bool,
                  local_gpu) -> list[str]:
    """What keeps a vllm model from running, per model key, before any job is built: vllm not
    installed (and no conda env to bring it), or a rule that gets no GPU (on SLURM: not in the
    profile's GPU rules; locally: this machine has none). `local_gpu` is called only if needed."""
    from judgeflow.workflow.pipeline import STAGES, inactive_stages

    out: list[str] = []
    has_gpu = None
    for name in STAGES:
        if name in inactive_stages(rules.config):
            continue
        for m in rules.vllm_models(name):
            if not uses_conda and not vllm_installed:
                out.append(f"models.{m}.backend: vllm is not installed (rule {name} runs it): pip install -e .[vllm] "
                           "into its own environment (vllm 0.32 needs transformers <5.20), or run with --sdm conda "
                           "(envs/vllm.yaml)")
            if on_slurm and (name not in gpu_rules_ or rules.local(name)):
                out.append(f"models.{m}.backend: vllm needs a GPU, and rule {name} gets none from the SLURM profile "
                           "(give it gpu: 1 under set-resources in profiles/slurm/config.yaml, or use backend: hf)")
            if not on_slurm:
                has_gpu = local_gpu() if has_gpu is None else has_gpu
                if not has_gpu:
                    out.append(f"models.{m}.backend: vllm needs a GPU, and this machine has none (rule {name}): run "
                               "with --profile slurm on a GPU partition, or use backend: hf")
    return list(dict.fromkeys(out))


def check_vllm(rules, workflow, site: dict | None) -> None:
    """Stop the parse, naming the model key, when a vllm model cannot run (see vllm_problems)."""
    import importlib.util

    from snakemake.exceptions import WorkflowError

    if workflow.remote_exec or not any(spec["backend"] == "vllm" for spec in rules.config["models"].values()):
        return
    methods = {str(getattr(m, "name", m)).lower() for m in workflow.deployment_settings.deployment_method}

    def local_gpu() -> bool:
        import torch

        return torch.cuda.is_available()

    problems = vllm_problems(rules, uses_conda="conda" in methods, on_slurm=site is not None,
                             gpu_rules_=gpu_rules(workflow.resource_settings),
                             vllm_installed=importlib.util.find_spec("vllm") is not None, local_gpu=local_gpu)
    if problems:
        raise WorkflowError("\n".join(problems))
