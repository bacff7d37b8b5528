"""Seconds for `snakemake -n --profile profiles/slurm` on the full-scale config, no SLURM binaries.

The figure of the SLURM-profile issue: config/examples/full-scale.yaml (all 294 IFBench questions,
32 shards, both DPO variants) dry-run with profiles/slurm and a site file, on a PATH that has no
SLURM tool, must build its DAG in under 10 s. Runs it --repeats times (the same call as
tests/test_slurm_profile.py) and prints each wall time, the median and the number of jobs planned.

    .venv/bin/python benchmarks/dry_run.py [--repeats 5] [--json]
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

from test_slurm_profile import _dry_run, make_no_slurm_path  # noqa: E402

TARGET_S = 10.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("argument --repeats: must be >= 1")
    seconds, jobs = [], None
    with tempfile.TemporaryDirectory(prefix="jf-dryrun-") as tmp:
        bin_dir = Path(tmp, "bin")
        bin_dir.mkdir()
        path = make_no_slurm_path(bin_dir)
        for i in range(args.repeats):
            run_dir = Path(tmp, f"run{i}")
            run_dir.mkdir()
            p, s = _dry_run(run_dir, path)
            if p.returncode != 0:
                print(p.stdout[-3000:] + p.stderr[-3000:], file=sys.stderr)
                return 1
            seconds.append(s)
            m = re.search(r"^total\s+(\d+)$", p.stdout + p.stderr, re.M)
            jobs = int(m.group(1)) if m else None
    result = {"config": "config/examples/full-scale.yaml", "profile": "profiles/slurm", "jobs": jobs,
              "seconds": [round(s, 2) for s in seconds], "median_s": round(statistics.median(seconds), 2),
              "target_s": TARGET_S}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"full-scale dry-run, profiles/slurm, no SLURM binaries: {jobs} jobs")
        print("wall seconds: " + ", ".join(f"{s:.2f}" for s in seconds))
        print(f"median {result['median_s']:.2f} s (target < {TARGET_S:.0f} s)")
    return 0 if result["median_s"] < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
