"""Cohorts of slides on dask.distributed (Qt-free): plan, worker plugin, run with its tile ledger, report.

``midog-viewer batch`` (:mod:`midog_viewer.cli.batch`) is the skin; :class:`~midog_viewer.batch.run.CohortRun`
is the engine, usable from scripts with any ``distributed.Client``.
"""
