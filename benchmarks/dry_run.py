"""Seconds for `snakemake -n --profile profiles/slurm` on the full-scale config, no SLURM binaries.

The figure of the SLURM-profile issue: config/examples/full-scale.yaml (all 294 IFBench questions,
32 shards, both DPO variants) dry-run with profiles/slurm and a site file, on a PATH that has no
SLURM tool, must build its DAG in under 10 s. Runs it --repeats times (the same call as
tests/test_slurm_profile.py) and prints each wall time, the median and the number of jobs planned.

At scale (the issue on scaling to real clusters): `--questions 10000 --shards 256` replaces the
question source by a JSONL file of 10,000 questions and cuts sampling and draws into 256 shards;
the target is then 30 s. Measured on the 2-core CI machine (2026-12-02): 1,295 jobs in 12.1 s.

    .venv/bin/python benchmarks/dry_run.py [--repeats 5] [--json] [--questions 10000 --shards 256]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_slurm_profile import FULL, _dry_run, make_no_slurm_path

TARGET_S = 10.0
TARGET_AT_SCALE_S = 30.0


def scale_config(tmp: Path, questions: int, shards: int) -> Path:
    """A config file over the full-scale one: `questions` questions in a JSONL source, `shards` shards."""
    import yaml

    src = Path(tmp, f"questions-{questions}.jsonl")
    with open(src, "w") as fh:
        for i in range(questions):
            fh.write(json.dumps({"question_id": f"q{i:06d}", "prompt": f"Question {i}: write {i % 7 + 1} sentences.",
                                 "criteria": [f"Exactly {i % 7 + 1} sentences."]}) + "\n")
    over = Path(tmp, "scale.yaml")
    over.write_text(yaml.safe_dump({"questions": {"source": "jsonl", "path": str(src), "limit": None},
                                    "sampling": {"shards": shards}}))
    return over


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--questions", type=int, help="a JSONL source of this many questions (default: IFBench's 294)")
    ap.add_argument("--shards", type=int, help="sampling.shards (default: the full-scale config's 32)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("argument --repeats: must be >= 1")
    seconds, jobs = [], None
    with tempfile.TemporaryDirectory(prefix="jf-dryrun-") as tmp:
        bin_dir = Path(tmp, "bin")
        bin_dir.mkdir()
        path = make_no_slurm_path(bin_dir)
        scaled = args.questions is not None or args.shards is not None
        extra = []
        if scaled:
            extra = ["--configfile", str(FULL), str(scale_config(Path(tmp), args.questions or 294, args.shards or 32))]
        target = TARGET_AT_SCALE_S if scaled else TARGET_S
        for i in range(args.repeats):
            run_dir = Path(tmp, f"run{i}")
            run_dir.mkdir()
            p, s = _dry_run(run_dir, path, *extra)
            if p.returncode != 0:
                print(p.stdout[-3000:] + p.stderr[-3000:], file=sys.stderr)
                return 1
            seconds.append(s)
            m = re.search(r"^total\s+(\d+)$", p.stdout + p.stderr, re.M)
            jobs = int(m.group(1)) if m else None
    result = {"config": "config/examples/full-scale.yaml", "profile": "profiles/slurm", "jobs": jobs,
              "questions": args.questions or 294, "shards": args.shards or 32,
              "seconds": [round(s, 2) for s in seconds], "median_s": round(statistics.median(seconds), 2),
              "target_s": target}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"full-scale dry-run, profiles/slurm, no SLURM binaries: {result['questions']} questions, "
              f"{result['shards']} shards, {jobs} jobs")
        print("wall seconds: " + ", ".join(f"{s:.2f}" for s in seconds))
        print(f"median {result['median_s']:.2f} s (target < {target:.0f} s)")
    return 0 if result["median_s"] < target else 1


if __name__ == "__main__":
    raise SystemExit(main())
