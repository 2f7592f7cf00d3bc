"""GPU workers declared as dask resources: tasks ask for them, local workers declare them, a cluster without them
is refused in one line instead of waiting for ever."""

from __future__ import annotations

import pytest

from midog_viewer.batch.cluster import ClusterError, parse_resources, start, stop, task_resources

distributed = pytest.importorskip("distributed")


def test_resources_parse_and_default_to_one_gpu_on_cuda():
    assert parse_resources("GPU=1, MEM=4e9") == {"GPU": 1.0, "MEM": 4e9}
    assert parse_resources(None) is None and parse_resources("") is None
    assert task_resources("cuda", None) == {"GPU": 1.0}
    assert task_resources("cpu", None) is None and task_resources(None, None) is None
    assert task_resources("cpu", {"FAST": 2.0}) == {"FAST": 2.0}


def test_tasks_ask_for_the_resources_local_workers_declare(tmp_path):
    """A LocalCluster started with resources declares them on every worker, and submitted tasks carry them."""
    client, cluster = start(None, 1, "cpu", None, None, processes=False, resources={"GPU": 1.0})
    try:
        assert client.midog_resources == {"GPU": 1.0}
        (info,) = client.scheduler_info()["workers"].values()
        assert info["resources"] == {"GPU": 1.0}
        future = client.submit(sum, [1, 2], resources=client.midog_resources)
        assert future.result(timeout=30) == 3
    finally:
        stop(client, cluster)


def test_a_cluster_whose_workers_lack_the_resource_is_refused_in_one_line():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(ClusterError, match="no worker of the dask cluster declares the resources GPU=1"):
            start(cluster.scheduler_address, None, "cuda", None, None)
        with Client(cluster) as client:  # the refused start left the cluster usable
            assert client.submit(sum, [2, 2]).result(timeout=30) == 4


def test_a_worker_without_the_resource_keeps_serving_other_work_when_the_model_cannot_load_there():
    """A CPU worker of a mixed cluster: the GPU detector fails to load there, the plugin registers anyway, and
    the GPU tasks (which never go there) would fail with the load error rather than a missing attribute."""
    from distributed import Client, LocalCluster

    from midog_viewer.batch.worker import DetectorPlugin, plan_task

    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU detector loads, there is no load failure to keep")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                      resources={"GPU": 1}) as cluster, Client(cluster) as client:
        plugin = DetectorPlugin(None, "cuda", None, resources={"GPU": 1.0})  # no CUDA here: the load fails
        client.register_plugin(plugin)
        future = client.submit(plan_task, plugin.name, "nowhere.svs", resources={"GPU": 1})
        with pytest.raises(Exception, match="CUDA was asked for"):
            future.result(timeout=30)
