"""Configuration: schema validation with defaults, then checks a schema cannot express.

The Snakefile calls `snakemake.utils.validate(config, "config/schema.yaml")` and then
`check(config)`; tests and the CLI call `load(path)`, which does both with jsonschema.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from .models import BACKENDS, ConfigError

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


def load(path: str | Path, schema: str | Path = SCHEMA, overrides: dict | None = None) -> dict:
    """Read a config file, merge `overrides`, validate it (filling defaults) and check it."""
    with open(path) as fh:
        config = yaml.safe_load(fh) or {}
    if overrides:
        config = deep_merge(config, overrides)
    validate(config, schema)
    check(config)
    return config


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def validate(config: dict, schema: str | Path = SCHEMA) -> None:
    """snakemake.utils.validate (fills defaults), with an error that names the config key."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as smk_validate

    try:
        smk_validate(config, str(schema), set_default=True)
    except WorkflowError as e:
        import jsonschema

        with open(schema) as fh:
            error = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(yaml.safe_load(fh)).iter_errors(config))
        if error is None:
            raise ConfigError(str(e).strip()) from None
        key = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in error.absolute_path).replace(".[", "[")
        raise ConfigError(f"config key {key or '(top level)'}: {error.message}") from None


def used_models(config: dict) -> dict[str, str]:
    """{config key: model name} for every role that names a model."""
    used = {}
    if config["cleaning"]["enabled"]:
        used["cleaning.model"] = config["cleaning"]["model"]
    used["sampling.model"] = config["sampling"]["model"]
    used["refining.model"] = config["refining"]["model"]
    for i, j in enumerate(config["judging"]["judges"]):
        used[f"judging.judges[{i}].model"] = j["model"]
    return used


def check(config: dict) -> None:
    """Cross-field checks, each error naming its config key."""
    models = config["models"]
    for name, spec in models.items():
        if spec["backend"] not in BACKENDS:
            raise ConfigError(f"models.{name}.backend: unknown backend '{spec['backend']}' "
                              f"(expected one of {', '.join(BACKENDS)})")
        if spec["backend"] == "hf" and not spec.get("path"):
            raise ConfigError(f"models.{name}.path: required for the hf backend")
        if spec["backend"] == "openai":
            if not spec.get("model"):
                raise ConfigError(f"models.{name}.model: required for the openai backend")
            if not spec.get("base_url") and not spec.get("serve"):
                raise ConfigError(f"models.{name}.base_url: required for the openai backend "
                                  "(or a serve: block to start a local server)")
    for key, name in used_models(config).items():
        if name not in models:
            raise ConfigError(f"{key}: unknown model '{name}' (defined under models: {', '.join(sorted(models))})")
    judges = config["judging"]["judges"]
    ids = [j["id"] for j in judges]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"judging.judges: duplicate judge ids {ids}")
    for i, j in enumerate(judges):
        if j.get("answer_first") and models[j["model"]]["backend"] != "hf":
            raise ConfigError(f"judging.judges[{i}].answer_first: needs an hf model (an API cannot be "
                              f"made to continue 'Verdict:'); model '{j['model']}' is {models[j['model']]['backend']}")
    if config["judging"]["k"] > len(judges):
        raise ConfigError(f"judging.k: {config['judging']['k']} exceeds the number of judges J={len(judges)}")
    draws, oracle = config.get("draws", {}), config.get("oracle", {})
    if draws.get("enabled", True) and oracle:
        if draws["min_draws"] > draws["n_max"]:
            raise ConfigError(f"draws.min_draws: {draws['min_draws']} exceeds draws.n_max={draws['n_max']}")
        bon = oracle["bon"]
        if bon["enabled"] and max(bon["n"], default=0) > draws["min_draws"]:
            raise ConfigError(f"oracle.bon.n: N up to {max(bon['n'])} needs every question drawn that often; "
                              f"raise draws.min_draws (now {draws['min_draws']}) or lower the N grid")
        for J in bon.get("j") or []:
            if J > len(judges):
                raise ConfigError(f"oracle.bon.j: J={J} exceeds the number of judges ({len(judges)})")
        if oracle["labeller"] != "verifier" and oracle["labeller"] not in models:
            raise ConfigError(f"oracle.labeller: '{oracle['labeller']}' is neither 'verifier' nor a model "
                              f"(defined under models: {', '.join(sorted(models))})")


def prepared_model_dir(config: dict, name: str) -> str:
    return str(Path(config["resources_dir"], "models", name))


def model_dirs_needed(config: dict, names) -> list[str]:
    """Prepared model directories (from `prepare.models`) that the given models load from."""
    prepared = {prepared_model_dir(config, n) for n in config["prepare"]["models"]}
    out = set()
    for name in names:
        spec = config["models"][name]
        for p in (spec.get("path"), (spec.get("serve") or {}).get("path")):
            if p and str(Path(p)) in prepared:
                out.add(str(Path(p)))
    return sorted(out)
