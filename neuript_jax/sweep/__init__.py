"""Fine-tuning sweeps: datasets x grid settings x seeds, one subprocess per run.

``launch/sweep.py`` is the command line. Modules, in the order a sweep uses them:

* ``overrides``: ``--config.<path>=<value>`` texts, resolved as a run's launcher resolves them;
  ``SweepError``.
* ``datasets``: a data_prep output folder and the config its runs start from
  (``neuript_jax/configs/downstream/<recipe>.py:<size>``, else the base config + manifest).
* ``plan``: ``--datasets``/``--seeds``/``--shard`` checks, the grid over config paths,
  ``--set``, the run list and each run's command.
* ``runner``: subprocesses, locks, resume, SIGTERM.
* ``records``: run folders on disk and ``results.jsonl``.
* ``summary``: summary.md / summary.csv; ``paper_results``: the paper's NeurIPT numbers.
"""
