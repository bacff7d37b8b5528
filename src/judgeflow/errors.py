"""The errors judgeflow raises on purpose, each with a message that names where the problem is.

* `ConfigError`: a configuration problem; the message names the config key.
* `InputError`: bad input data; the message names the file, the line and what was expected.
* `BackendError`: a model backend failed for good (after its retries); the message names the endpoint.
* `BudgetReached`: an API call could have passed the run's spending cap and was not sent; the message
  names the cap's key, what was spent and what to do.

`judgeflow.workflow.pipeline.UndeclaredSetting` (a stage read a setting it does not declare) and
`judgeflow.workflow.cluster.ClusterConfigError` (a SLURM site value) are the workflow layer's own.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem; the message names the config key."""


class InputError(ValueError):
    """Bad input data: the message names the file, the line and what was expected."""


class BackendError(RuntimeError):
    """A model backend failed for good (after its retries); the message names the endpoint."""


class BudgetReached(RuntimeError):
    """An API call could have passed budget.max_cost (or a rule's cap) and was not sent."""
