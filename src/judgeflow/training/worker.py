"""The train_dpo worker, run under `accelerate launch -m judgeflow.training.worker` (one process per
GPU, or one on CPU) by the train_dpo stage (judgeflow.stages.train_dpo).

Paths come as arguments, the training settings (the stage's declared settings) as JSON in
$JUDGEFLOW_TRAIN_SETTINGS. All logic: judgeflow.training.dpo.
"""
import argparse
import json
import logging
import os
import sys
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def worker_logging() -> None:
    """Log lines of this process, its rank in them (rank 0 at INFO, the others at WARNING), on stderr."""
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO if rank == "0" else logging.WARNING, stream=sys.stderr, force=True,
                        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s")


def run_reported(stage: str, job: Callable[[], object]) -> int:
    """Run a training job: 0, or 1 with a bad input or setting logged and printed, naming the stage."""
    from judgeflow.errors import ConfigError, InputError

    try:
        job()
    except (InputError, ConfigError) as e:
        logging.getLogger("judgeflow").error("%s", e)
        print(f"{stage}: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--variant", required=True)
    p.add_argument("--pairs", required=True, help="results/<run>/pairs/<variant>.jsonl")
    p.add_argument("--model", required=True, help="the policy's transformers directory")
    p.add_argument("--out-dir", required=True, help="results/<run>/dpo/<variant>")
    p.add_argument("--accelerate-config", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--settings", default=None, help="JSON file (default: $JUDGEFLOW_TRAIN_SETTINGS)")
    a = p.parse_args(argv)
    worker_logging()
    if a.settings:
        with open(a.settings) as fh:
            settings = json.load(fh)
    else:
        settings = json.loads(os.environ["JUDGEFLOW_TRAIN_SETTINGS"])

    from judgeflow.training import dpo

    return run_reported("train_dpo", lambda: dpo.train(
        dpo.WorkerSettings.from_json(settings), a.variant, a.pairs, a.model, a.out_dir,
        accelerate_config=a.accelerate_config, threads=a.threads))


if __name__ == "__main__":
    sys.exit(main())
