"""Prompt templates: packaged text files under judgeflow/prompts, or a user's own file."""
from __future__ import annotations

import hashlib
import string
from importlib import resources
from pathlib import Path

from .models.base import ConfigError


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


def load_template(name_or_path: str, fields: set[str], key: str) -> str:
    """Load a template by packaged name or file path; check it uses exactly `fields`."""
    path = template_path(name_or_path, key)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{key}: template file '{path}' is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    used = {f for _, f, _, _ in string.Formatter().parse(text) if f}
    if used != fields:
        raise ConfigError(f"{key}: template '{name_or_path}' uses fields {sorted(used)}, expected {sorted(fields)}")
    return text


def stable_seed(*parts) -> int:
    """A seed derived from ids, identical across runs, machines and Python versions."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).hexdigest()
    return int(digest[:15], 16)
