"""The conda env files carry the same pins as the pip install (requirements.txt)."""
import re

import yaml

from conftest import ROOT


def _pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)", line)
        if m:
            out[m.group(1).lower()] = m.group(3)
    return out


def test_env_files_match_requirements():
    req = {}
    for f in ("requirements.txt", "requirements-data.txt", "requirements-train.txt"):
        req.update(_pins((ROOT / f).read_text().splitlines()))
    req["torch"] = "2.13.0"  # installed first by the Makefile
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert envs, "no conda env files"
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        pins = _pins(pip)
        assert pins, f"{env.name} pins nothing"
        for name, version in pins.items():
            assert name in req, f"{env.name}: {name} is not in requirements*.txt"
            assert req[name] == version, f"{env.name}: {name}=={version}, requirements*.txt has {req[name]}"


def test_every_rule_has_log_benchmark_conda_and_script():
    """script: everywhere, except rules that start a launcher (accelerate launch): shell:."""
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=rule )", text)[1:]:
            name = block.split(":")[0].split()[1]
            for directive in ("log:", "benchmark:", "conda:"):
                assert directive in block, f"{smk.name}: rule {name} has no {directive}"
            assert "script:" in block or ("shell:" in block and "launch" in block), \
                f"{smk.name}: rule {name} has no script: (shell: only for a launcher)"
