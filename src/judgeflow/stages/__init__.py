"""One module per workflow stage, each with `run(inp, out, settings, job)`.

`inp` and `out` are the rule's named input and output files (attributes: a path, or a list of
paths), `settings` exactly the settings the stage declares (judgeflow.workflow.pipeline), `job` the
job's threads, wildcards, resources and log directory. Each module imports only what its stage
needs: its code digest (a rerun trigger) covers exactly those modules.
"""
