"""The one entry point of every `script:` rule (workflow/scripts/stage.py): the job's log file
catches everything (C-level output too), then the rule's stage runs on exactly its declared
settings. No Snakemake import: it only reads the `snakemake` object a `script:` receives.

Before the stage starts, the API key of every model of the config (the variable its `api_key_env`
names, where set) is registered with `judgeflow.workflow.redact`: from then on the job's log records,
warnings and the traceback of a failure are written with each key masked. A stage that fails has
its traceback printed here, masked, and the job exits with status 1.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from judgeflow.workflow import redact

log = logging.getLogger("judgeflow")


def setup(snakemake) -> None:
    redact.install()
    redact.register_config(snakemake.config)  # every model's API key is masked in the job's logs
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if snakemake.log:
        fd = os.open(str(snakemake.log[0]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)  # file-descriptor level, so C extensions and child processes log there too
        os.dup2(fd, 2)
        os.close(fd)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log.info("rule %s, wildcards %s, threads %s", snakemake.rule, dict(snakemake.wildcards), snakemake.threads)


def _files(named) -> dict:
    return {k: (str(v) if isinstance(v, str) else [str(x) for x in v]) for k, v in named.items()}


def run(snakemake) -> None:
    """Run the stage of `snakemake.rule` with the rule's named inputs, outputs and settings. A
    failure's traceback goes to the job's log with every registered key masked; exit status 1."""
    setup(snakemake)
    try:
        _run(snakemake)
    except Exception as e:  # noqa: BLE001 - printed (masked) and turned into the job's failure
        fail(e)


def fail(e: BaseException) -> None:
    """Print the traceback of `e`, masked, to stderr (the job's log) and exit with status 1."""
    sys.stdout.flush()
    sys.stderr.write(redact.format_exception(e))
    sys.stderr.flush()
    raise SystemExit(1) from None


def _run(snakemake) -> None:
    from judgeflow.workflow import pipeline

    extra = {k: v for k, v in snakemake.params.items() if k not in ("settings", "code")}
    settings = pipeline.run_stage(
        snakemake.rule, _files(snakemake.input), _files(snakemake.output), snakemake.config,
        threads=snakemake.threads, wildcards=dict(snakemake.wildcards.items()),
        resources=dict(snakemake.resources.items()),
        log_dir=str(Path(snakemake.log[0]).parent) if snakemake.log else None,
        job_params=extra, settings_params=snakemake.params.settings)
    log.info("settings read: %s", ", ".join(sorted(settings.read)) or "(none)")
