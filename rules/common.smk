# Shared paths and helpers. All logic is in the judgeflow package (src/judgeflow).
from pathlib import Path

RUN = config["run"]
RESULTS = f"{config['results_dir']}/{RUN}"
LOGS = f"{config['logs_dir']}/{RUN}"
BENCH = f"{config['benchmarks_dir']}/{RUN}"
MODELS_DIR = f"{config['resources_dir']}/models"
SHARDS = list(range(config["sampling"]["shards"]))


wildcard_constraints:
    shard=r"\d+",


localrules:
    all,
    prepare_questions,
    build_pairs,
    report,

# (heading, [files]) sections that later rule files add to the run's HTML report.
REPORT_EXTRA = []


def rule_resource(rule, key):
    """`resources.rules.<rule>.<key>` or `resources.default.<key>`."""
    per_rule = config["resources"]["rules"].get(rule, {})
    return per_rule.get(key, config["resources"]["default"].get(key))


def rule_threads(rule):
    return rule_resource(rule, "threads")


def rule_mem(rule):
    return rule_resource(rule, "mem_mb")


def rule_runtime(rule):
    return rule_resource(rule, "runtime")


def model_dirs(*names):
    """Prepared model directories the given models load from (inputs, so prepare_model runs first)."""
    return jf_config.model_dirs_needed(config, names)


def judge_model_dirs(wildcards=None):
    return model_dirs(*{j["model"] for j in config["judging"]["judges"]})


def models_params(*names):
    """The model specs a rule uses: a change to them reruns the rule (params rerun trigger)."""
    return {n: config["models"][n] for n in sorted(set(names))}


def questions_file():
    q = config["questions"]
    name = q["source"] if q["source"] == "ifbench" else Path(q["path"]).stem
    return f"{config['resources_dir']}/data/{name}" + (f"-first{q['limit']}" if q["limit"] else "") + ".jsonl"


def shard_files(pattern):
    return expand(pattern, shard=SHARDS)
