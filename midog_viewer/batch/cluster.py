"""Where a cohort runs: a ``distributed.LocalCluster`` on this machine, or an existing cluster by address.

Any dask deployment works through its scheduler address (SSH, Kubernetes, SLURM via dask-jobqueue). Every
worker gets the detector through :class:`~midog_viewer.batch.worker.DetectorPlugin`, loaded once per worker.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from midog_viewer.batch.worker import DetectorPlugin
from midog_viewer.errors import MidogError

#: The dask resource name a GPU worker declares (``dask worker --resources GPU=1``) and GPU tasks ask for.
GPU_RESOURCE = "GPU"
#: Seconds to wait for a scheduler given by address before calling it unreachable.
CONNECT_TIMEOUT = 5


#: LocalCluster options for no dashboard; the scheduler's HTTP routes on a free port, not 8787 (which another
#: cluster may hold: dask would print a warning).
NO_DASHBOARD: dict[str, Any] = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": ":0"}}


class ClusterError(MidogError):
    """A scheduler that cannot be reached, or a cluster that cannot be started."""


def default_workers(device: str | None) -> int:
    """One worker per GPU when running on CUDA, else one per two CPU cores."""
    if device != "cpu":
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return int(torch.cuda.device_count())
    return max(1, (os.cpu_count() or 2) // 2)


def parse_resources(text: str | None) -> dict[str, float] | None:
    """``"GPU=1,MEM=4e9"`` as dask resources ({"GPU": 1.0, ...}); None or "" gives None. MidogError if malformed."""
    if not text:
        return None
    resources: dict[str, float] = {}
    for item in text.split(","):
        name, sep, amount = item.strip().partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or not value > 0:
            raise MidogError(f"--resources takes NAME=AMOUNT[,NAME=AMOUNT] with amounts above 0, not {text!r}.")
        resources[name.strip()] = value
    return resources


def task_resources(device: str | None, given: dict[str, float] | None) -> dict[str, float] | None:
    """What each detection task asks of its worker: the given resources, else one ``GPU`` on CUDA, else nothing.

    A GPU worker of any dask deployment declares it with ``dask worker --resources GPU=1``; LocalCluster
    workers started for ``--device cuda`` declare one GPU each (:func:`start`). CPU-only workers of the same
    cluster then never receive a GPU task.
    """
    if given:
        return dict(given)
    return {GPU_RESOURCE: 1.0} if device == "cuda" else None


def quiet_dask_logs(level: int = logging.ERROR) -> None:
    """Keep distributed's log lines (reconnects, restarts) off stderr below ``level``."""
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(level)


def start(scheduler: str | None, workers: int | None, device: str | None, model: str | None,
          score_thr: float | None, processes: bool = True,
          resources: dict[str, float] | None = None) -> tuple[Any, Any]:
    """A client (and the LocalCluster it owns, or None) whose workers carry the detector plugin.

    The plugin's name (what tasks ask for) is ``client.midog_plugin``; the resources each task asks for
    (:func:`task_resources`) are ``client.midog_resources``. Local workers declare those resources, so
    the tasks can run on them.
    """
    from distributed import Client, LocalCluster

    cluster = None
    if scheduler is not None:
        import dask
        from dask.utils import parse_timedelta

        # dask's own connect timeout when it is set shorter (DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)
        timeout = min(CONNECT_TIMEOUT, parse_timedelta(dask.config.get("distributed.comm.timeouts.connect")))
        quiet_dask_logs(logging.CRITICAL + 1)  # a refused connection is our one line, not dask's
        try:
            client = Client(scheduler, timeout=timeout)
        except Exception as exc:  # OSError, TimeoutError, ValueError for a malformed address
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"cannot reach the dask scheduler at {scheduler} ({detail}).") from None
        finally:
            quiet_dask_logs()
        threads = None
    else:
        n = workers or default_workers(device)
        threads = max(1, (os.cpu_count() or 1) // n)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes, silence_logs=logging.CRITICAL,
                               resources=task_resources(device, resources), **NO_DASHBOARD)
        client = Client(cluster)
    wanted = task_resources(device, resources)
    plugin = DetectorPlugin(model, device, score_thr, torch_threads=threads,
                            ignore_interrupt=cluster is not None and processes, resources=wanted)
    try:
        client.midog_resources = wanted
        if scheduler is not None and client.midog_resources:
            _check_some_worker_has(client, client.midog_resources)
        client.register_plugin(plugin)
        client.midog_plugin = plugin.name
    except BaseException:
        client.close()
        if cluster is not None:
            cluster.close()
        raise
    return client, cluster


def _check_some_worker_has(client: Any, wanted: dict[str, float]) -> None:
    """Refuse a cluster none of whose workers declares ``wanted`` (its tasks would wait for ever)."""
    workers = client.scheduler_info().get("workers", {})
    for info in workers.values():
        declared = info.get("resources") or {}
        if all(declared.get(name, 0) >= amount for name, amount in wanted.items()):
            return
    asked = ",".join(f"{name}={amount:g}" for name, amount in wanted.items())
    raise ClusterError(f"no worker of the dask cluster declares the resources {asked} (start GPU workers with "
                       f"'dask worker --resources {asked}', or pass --device cpu).")


def stop(client: Any, cluster: Any) -> None:
    """Close the client, then the LocalCluster it owns (a given cluster is left running)."""
    try:
        client.close(timeout=10)
    finally:
        if cluster is not None:
            cluster.close(timeout=10)
