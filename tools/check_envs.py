"""A dry solve of each conda env file's torch (and, for envs/vllm.yaml, vllm): which build pip picks.

For every env file under envs/ that pins torch, pip resolves `torch==<pin>` for Linux x86_64 /
CPython 3.11 with exactly the index options the env file gives (the machine's own pip config and
constraints are ignored), downloading metadata only where the index serves it, and reports the
version it picked and whether that build depends on the CUDA runtime wheels. An env meant for GPU
rules must resolve to a CUDA build, an env with the CPU index to a `+cpu` build. For envs/vllm.yaml
it also resolves vllm and checks that the torch and transformers it requires match the file's pins.

    .venv/bin/python tools/check_envs.py          # needs the package indexes the env files name

Exit status 0: every env resolved to its build; 1: a wrong build or a mismatch; 2: an index could
not be reached (printed, not judged). tests/test_envs.py checks the files' contents offline.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
GPU_ENVS = {"models-gpu.yaml", "training.yaml", "vllm.yaml"}


def pip_section(env: Path) -> list[str]:
    spec = yaml.safe_load(env.read_text())
    return next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)


def resolve(requirement: str, index_options: list[str]) -> dict:
    """pip's dry-run report of one requirement (no dependencies), for manylinux x86_64, CPython 3.11."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, "report.json")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "-q",
               "--report", str(report), "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
               "--only-binary=:all:", "--target", str(Path(tmp, "t")), *index_options, requirement]
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_CONSTRAINT": "", "PIP_FIND_LINKS": ""}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if p.returncode != 0:
            return {"error": " ".join(p.stderr.split())[-300:]}
        item = json.loads(report.read_text())["install"][0]
        return {"version": item["metadata"]["version"], "url": item["download_info"]["url"],
                "requires": item["metadata"].get("requires_dist") or []}


def main() -> int:
    status = 0
    for env in sorted((ROOT / "envs").glob("*.yaml")):
        pip = pip_section(env)
        pins = {m.group(1).lower(): m.group(2) for line in pip
                if (m := re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line))}
        if "torch" not in pins:
            print(f"{env.name:18} no torch")
            continue
        options = [part for line in pip if line.startswith("--") for part in line.split()]
        got = resolve(f"torch=={pins['torch']}", options)
        if "error" in got:
            print(f"{env.name:18} torch=={pins['torch']}: not resolved ({got['error']})")
            status = max(status, 2)
            continue
        index_hosts = {h for o in options for h in re.findall(r"https?://([^/\s]+)", o)}
        if index_hosts and not any(h in got["url"] for h in index_hosts):
            print(f"{env.name:18} torch=={pins['torch']}: not judged: no answer from {', '.join(sorted(index_hosts))} "
                  f"(pip fell back to {got['url'].split('/')[2]}: {got['version']})")
            status = max(status, 2)
            continue
        cuda = any(re.match(r"(cuda-toolkit|nvidia-\w+-cu\d+|nvidia-cuda)", r) for r in got["requires"])
        build = "CUDA" if cuda else ("CPU" if got["version"].endswith("+cpu") else "unknown")
        want = "CUDA" if env.name in GPU_ENVS else "CPU"
        ok = build == want
        cuda_req = next((r.split(";")[0] for r in got["requires"] if r.startswith("cuda-toolkit")), "")
        print(f"{env.name:18} torch {got['version']:12} {build:5} (want {want}) {cuda_req}"
              + ("" if ok else "  <-- WRONG"))
        status = max(status, 0 if ok else 1)
        if env.name == "vllm.yaml":
            v = resolve(f"vllm=={pins['vllm']}", options)
            if "error" in v:
                print(f"{'':18} vllm=={pins['vllm']}: not resolved ({v['error']})")
                status = max(status, 2)
                continue
            reqs = [Requirement(r) for r in v["requires"]]
            for name in ("torch", "transformers"):
                req = next((r for r in reqs if r.name == name and not r.marker), None)
                fits = req is not None and req.specifier.contains(pins[name])
                print(f"{'':18} vllm {v['version']} needs {req}; the file pins {name}=={pins[name]}"
                      + ("" if fits else "  <-- MISMATCH"))
                status = max(status, 0 if fits else 1)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
