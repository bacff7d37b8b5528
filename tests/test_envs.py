"""The conda env files carry the same pins as the pip install (requirements.txt), each rule gets
the torch build of the node it runs on (CUDA on the profile's GPU rules, the CPU wheel elsewhere),
and a vllm model swaps in envs/vllm.yaml."""
import re
import tomllib
from pathlib import Path

import yaml

from conftest import ROOT

CPU_INDEX = "download.pytorch.org/whl/cpu"
# envs/vllm.yaml: vllm itself, and the transformers its release needs (<5.20; the others pin 5.23.0)
VLLM_OWN = {"vllm", "transformers"}


def _env_pip(env) -> list[str]:
    spec = yaml.safe_load(env.read_text())
    return next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)


def rule_envs() -> dict[str, str]:
    """rule -> the env file its conda: directive gets: every rule's is S.conda, S = JF.stage(<its own name>)
    just above it, which derives the env from the stage's declaration (pipeline.conda_env: its node class)."""
    from judgeflow.workflow.rulekit import Rules
    from judgeflow.workflow.settings import load

    rules = Rules(load(ROOT / "config" / "config.yaml"))
    out = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        chunks = re.split(r"^(?=rule )", smk.read_text(), flags=re.M)
        for above, block in zip(chunks, chunks[1:]):
            name = block.split(":")[0].split()[1]
            assert re.search(r"conda:\s*\n\s*S\.conda\n", block), f"{smk.name}: rule {name}: its conda: is not S.conda"
            stage = re.findall(r'^S = JF\.stage\("(\w+)"\)$', above, re.M)
            assert stage[-1:] == [name], f"{smk.name}: rule {name} takes S from JF.stage({stage[-1:]})"
            out[name] = Path(rules.conda(name)).name
            assert (ROOT / "envs" / out[name]).is_file(), out[name]
    return out


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
        pins = _pins(_env_pip(env))
        assert pins, f"{env.name} pins nothing"
        for name, version in pins.items():
            if env.name == "vllm.yaml" and name in VLLM_OWN:
                continue
            assert name in req, f"{env.name}: {name} is not in requirements*.txt"
            assert req[name] == version, f"{env.name}: {name}=={version}, requirements*.txt has {req[name]}"


def test_vllm_env_matches_the_optional_extra():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["vllm"]
    pins = _pins(_env_pip(ROOT / "envs" / "vllm.yaml"))
    assert f"vllm=={pins['vllm']}" in extra
    assert pins["torch"] == "2.13.0" and pins["transformers"].startswith("5.19.")  # vllm 0.32: torch 2.13, <5.20
    assert "transformers>=5.16.1,<5.20" in extra


def test_gpu_rules_get_cuda_torch_and_cpu_rules_the_cpu_wheel():
    """The profile's GPU rules (set-resources with gpu) name an env whose torch is PyPI's Linux wheel (the
    CUDA build) with no CPU index; every other rule that installs torch takes it from the CPU index."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    gpu = {r for r, res in profile["set-resources"].items() if "gpu" in res}
    envs = rule_envs()
    assert gpu <= set(envs), sorted(gpu - set(envs))
    for rule, env in sorted(envs.items()):
        pip = _env_pip(ROOT / "envs" / env)
        has_torch = "torch" in _pins(pip)
        cpu_index = any(CPU_INDEX in line for line in pip)
        if rule in gpu:
            assert has_torch and not cpu_index, f"GPU rule {rule}: envs/{env} would install the CPU torch"
            assert not any("--index-url" in line and "/whl/cu" not in line for line in pip), (rule, env)
        elif has_torch:
            assert cpu_index, f"CPU rule {rule}: envs/{env} would install CUDA torch (GBs) on a CPU node"
    for env in ("models-gpu.yaml", "training.yaml", "vllm.yaml"):
        assert not any(CPU_INDEX in line for line in _env_pip(ROOT / "envs" / env)), env
    assert envs["tree_search_gate"] == "models.yaml"   # an LLM oracle's comparisons need openai (not analysis)


def test_every_rule_has_log_benchmark_conda_and_script():
    """script: everywhere, except rules that start a launcher (accelerate launch): shell:."""
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        # every block, the first of a file too (a file that starts with its first rule)
        for block in (b for b in re.split(r"^(?=rule )", text, flags=re.M) if b.startswith("rule ")):
            name = block.split(":")[0].split()[1]
            for directive in ("log:", "benchmark:", "conda:"):
                assert directive in block, f"{smk.name}: rule {name} has no {directive}"
            assert "script:" in block or ("shell:" in block and "launch" in block), \
                f"{smk.name}: rule {name} has no script: (shell: only for a launcher)"
