"""Glue for `workflow/scripts/*.py`: send logging, stdout and stderr of a rule to its log file.

(No Snakemake import: it only reads the `snakemake` object a `script:` receives.)
"""
from __future__ import annotations

import logging
import os
import sys


def setup(snakemake) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if snakemake.log:
        fd = os.open(str(snakemake.log[0]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)  # file-descriptor level, so C extensions and child processes log there too
        os.dup2(fd, 2)
        os.close(fd)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.info("rule %s, wildcards %s, threads %s", snakemake.rule, dict(snakemake.wildcards), snakemake.threads)
