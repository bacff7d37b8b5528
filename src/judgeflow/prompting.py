"""Prompt templates: packaged text files under judgeflow/prompts, or a user's own file."""
from __future__ import annotations

import hashlib
import string
from importlib import resources
from pathlib import Path

from .models.base import ConfigError


def load_template(name_or_path: str, fields: set[str], key: str) -> str:
    """Load a template by packaged name (`judge`) or file path; check it uses exactly `fields`."""
    path = Path(name_or_path)
    if path.suffix == ".txt" or path.exists():
        if not path.exists():
            raise ConfigError(f"{key}: template file '{name_or_path}' not found")
        text = path.read_text(encoding="utf-8")
    else:
        res = resources.files("judgeflow").joinpath("prompts", f"{name_or_path}.txt")
        if not res.is_file():
            names = sorted(p.name[:-4] for p in resources.files("judgeflow").joinpath("prompts").iterdir()
                           if p.name.endswith(".txt"))
            raise ConfigError(f"{key}: unknown template '{name_or_path}' (packaged: {', '.join(names)}; "
                              "or give a path to a .txt file)")
        text = res.read_text(encoding="utf-8")
    used = {f for _, f, _, _ in string.Formatter().parse(text) if f}
    if used != fields:
        raise ConfigError(f"{key}: template '{name_or_path}' uses fields {sorted(used)}, expected {sorted(fields)}")
    return text


def stable_seed(*parts) -> int:
    """A seed derived from ids, identical across runs, machines and Python versions."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).hexdigest()
    return int(digest[:15], 16)
