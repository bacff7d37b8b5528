"""Prompt templates: packaged text files under judgeflow/prompts, or a user's own file."""
from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Set as AbstractSet
from importlib import resources
from pathlib import Path

from judgeflow.errors import ConfigError


def packaged_templates() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files("judgeflow").joinpath("prompts").iterdir()
                  if p.name.endswith(".txt"))


def template_path(name_or_path: str, key: str) -> Path:
    """The file of a template setting: a packaged name (`judge`) or a path to a .txt file.

    The rules list this file as an input, so editing it reruns the stage that loads it."""
    if name_or_path.endswith(".txt") or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"{key}: template file '{name_or_path}' not found")
        return path
    res = resources.files("judgeflow").joinpath("prompts", f"{name_or_path}.txt")
    if not res.is_file():
        raise ConfigError(f"{key}: unknown template '{name_or_path}' (packaged: {', '.join(packaged_templates())}; "
                          "or give a path to a .txt file)")
    return Path(str(res))


# The placeholders each template setting must use, exactly: the one table the stages load their
# templates with (`load_template` checks a stage's own set against it) and the workflow checks
# every template of a config against when it is parsed (judgeflow.workflow.rulekit.Rules.check_before_jobs).
# Keyed like the stage declarations of judgeflow.workflow.pipeline ([*]: any list item).
TEMPLATE_FIELDS: dict[str, frozenset[str]] = {
    "evolution.template": frozenset({"instruction", "main_constraint", "min_constraints", "max_constraints"}),
    "cleaning.template": frozenset({"question"}),
    "judging.judges[*].template": frozenset({"question", "response", "criterion"}),
    "judging.judges[*].holistic_template": frozenset({"question", "response", "criteria"}),
    "refining.template_one": frozenset({"question", "response", "criterion", "critiques"}),
    "refining.template_all": frozenset({"question", "response", "criteria"}),
    "oracle.template": frozenset({"question", "criteria", "response"}),
    "evaluation.oracle_template": frozenset({"question", "response_a", "response_b"}),
}


def template_fields(key: str) -> frozenset[str]:
    """The placeholders of the template setting `key` (`judging.judges[0].template` is
    `judging.judges[*].template`)."""
    pattern = re.sub(r"\[\d+\]", "[*]", key)
    if pattern not in TEMPLATE_FIELDS:
        raise KeyError(f"{key}: no template setting (judgeflow.generation.prompting.TEMPLATE_FIELDS)")
    return TEMPLATE_FIELDS[pattern]


def template_placeholders(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def load_template(name_or_path: str, fields: AbstractSet[str] | None, key: str) -> str:
    """Load a template by packaged name or file path; check it uses exactly the placeholders of
    `key` in TEMPLATE_FIELDS (`fields`, when given, must be that set: a stage that fills other
    placeholders than the table says is a bug, found here)."""
    expected = template_fields(key)
    if fields is not None and set(fields) != expected:
        raise RuntimeError(f"{key}: the stage fills {sorted(fields)}, but "
                           "judgeflow.generation.prompting.TEMPLATE_FIELDS "
                           f"says {sorted(expected)}; make them agree")
    fields = expected
    path = template_path(name_or_path, key)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{key}: template file '{path}' is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        used = template_placeholders(text)
    except ValueError as e:  # an unmatched brace
        raise ConfigError(f"{key}: template '{name_or_path}' is not a valid format string ({e}); a literal "
                          f"brace is written {{{{ or }}}}") from None
    if used != fields:
        raise ConfigError(f"{key}: template '{name_or_path}' uses fields {sorted(used)}, expected {sorted(fields)}")
    return text


def stable_seed(*parts) -> int:
    """A seed derived from ids, identical across runs, machines and Python versions."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).hexdigest()
    return int(digest[:15], 16)
