"""mobinumba.dask on a LocalCluster of two worker processes on loopback.

Every result is compared with the single-machine run (predict_files) on the same images; the
last two tests kill a worker process (SIGKILL) while it is busy and while it holds results, and
check that no row is lost or duplicated and that Dask did recompute the lost work.
"""
import collections
import ctypes
import inspect
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import numba
import pandas as pd
import pytest
from distributed import Client, LocalCluster, futures_of, wait

import mobinumba
from conftest import make_photos, run_cli
from mobinumba import FileResult
from mobinumba.batch import local_cluster
from mobinumba.dask import (THREADS_RESOURCE, ModelPlugin, _as_given, iter_results,
                            predict_dataframe, register_model, results_frame)
from mobinumba.results import read_results, result_row
from mobinumba.threads import available_cores

pytestmark = pytest.mark.slow  # starts Dask clusters

TOPK = 3
WAIT_S = 60  # upper bound of any wait below; the waits normally end within seconds


@pytest.fixture(scope="module")
def cluster():
    """(LocalCluster, Client): 2 worker processes, 1 thread each, on 127.0.0.1."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local, Client(local) as client:
        yield local, client


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """30 readable images and one broken file, sorted."""
    directory = tmp_path_factory.mktemp("dask_photos")
    broken = directory / "broken.png"
    broken.write_bytes(b"\x89PNG but no image")
    return sorted(make_photos(directory, 30, seed=1) + [str(broken)])


@pytest.fixture(scope="module")
def expected(small_model, images):
    """The single-machine results for `images`."""
    return list(mobinumba.predict_files(images, batch_size=16, topk=TOPK,
                                        weights=small_model[1]))


def rows_by_path(results):
    return sorted((result_row(result, TOPK) for result in results), key=lambda r: r["path"])


def test_dataframe_matches_the_single_machine_run(cluster, small_model, images, expected,
                                                  tmp_path):
    _, client = cluster
    frame = predict_dataframe(client, images, weights=small_model[1], batch_size=4, topk=TOPK,
                              partition_size=7)
    assert frame.npartitions == 5  # 31 paths in slices of 7
    computed = frame.compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(computed, results_frame(expected, TOPK))
    assert computed["error"].notna().sum() == 1
    frame.to_parquet(tmp_path / "parts")  # one file per partition, written by the workers
    assert len(list((tmp_path / "parts").glob("*.parquet"))) == 5
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "parts").reset_index(drop=True),
                                  computed, check_dtype=False)


def test_the_model_is_loaded_once_per_worker_not_sent_with_tasks(cluster, small_model, images):
    _, client = cluster
    name = ModelPlugin(small_model[1]).name

    def loaded_model(dask_worker):
        plugin = dask_worker.plugins[name]
        return id(plugin._model), plugin._model is not None, mobinumba.get_threads()

    frame = predict_dataframe(client, images, weights=small_model[1], topk=TOPK,
                              partition_size=3)
    before = client.run(loaded_model)  # loaded at registration, before any task ran
    assert len(before) == 2 and all(ready for _, ready, _ in before.values())
    assert all(threads == 1 for _, _, threads in before.values())  # each worker: nthreads 1
    frame.compute()
    assert client.run(loaded_model) == before  # the same Model object after 11 tasks
    graph = pickle.dumps(dict(frame.__dask_graph__()))
    assert len(graph) < os.path.getsize(small_model[1]) / 10  # tasks carry paths, no weights


class MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2: hblks is the number of chunks currently served by mmap."""
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def mmaps_for_a_one_mib_malloc():
    """How many new mmap-served chunks a 1 MiB malloc() creates in this process (0 or 1)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblks
    pointer = libc.malloc(2 ** 20)
    after = libc.mallinfo2().hblks
    libc.free(pointer)
    return after - before


def test_workers_serve_image_sized_arrays_from_the_heap(cluster, small_model):
    """Dask starts workers with MALLOC_TRIM_THRESHOLD_, which pins glibc's mmap threshold at
    128 KiB; the model plugin raises it so that decoded images do not each cost an mmap."""
    _, client = cluster
    assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {"65536"}
    register_model(client, small_model[1])
    assert set(client.run(mmaps_for_a_one_mib_malloc).values()) == {0}
    source = "\n".join(["import ctypes", inspect.getsource(MallInfo2),
                        inspect.getsource(mmaps_for_a_one_mib_malloc),
                        "print(mmaps_for_a_one_mib_malloc())"])
    plain = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                           env={**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}, check=True)
    assert plain.stdout.strip() == "1"  # the same setting, without the plugin


def test_results_carry_paths_as_given_in_the_error_text_too():
    resolved = FileResult("/data/./x.png", None, "/data/./x.png: cannot decode image "
                                                 "(cannot identify image file '/data/./x.png')")
    assert _as_given(resolved, "./x.png") == FileResult(
        "./x.png", None, "./x.png: cannot decode image (cannot identify image file './x.png')")


@pytest.mark.slow
def test_kernel_threads_come_from_the_argument_the_resource_or_nthreads(small_model, workdir,
                                                                        tmp_path):
    """Worker processes declaring the mobinumba-threads resource (as `dask worker --resources`
    does) run that many kernel threads, at most Numba's pool; a `threads` argument wins. (The
    `cluster` fixture's workers, without the resource, run their nthreads: 1.)"""
    limit = numba.config.NUMBA_NUM_THREADS
    other = tmp_path / "unlabelled.h5"  # the same network in other bytes: a second plugin
    assert run_cli("convert", workdir / "small.safetensors", "-o", other, "--input-size", 64,
                   "--labels", "none", "--no-check") == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0", resources={THREADS_RESOURCE: limit + 5}) as local, \
            Client(local) as client:
        register_model(client, small_model[1])
        assert list(client.run(mobinumba.get_threads).values()) == [limit, limit]
        register_model(client, other, threads=1)
        assert list(client.run(mobinumba.get_threads).values()) == [1, 1]


def test_default_partitions_hold_256_paths(cluster, small_model, tmp_path):
    """257 paths (files that do not exist: each gives an error row at once) make two
    partitions, two tasks, by default."""
    _, client = cluster
    paths = [str(tmp_path / f"missing{index:03d}.jpg") for index in range(257)]
    frame = predict_dataframe(client, paths, weights=small_model[1], topk=TOPK)
    assert frame.npartitions == 2
    computed = frame.compute()
    assert list(computed["path"]) == paths and computed["error"].notna().all()
    parts = list(iter_results(client, paths, weights=small_model[1], topk=TOPK))
    assert sorted(len(part) for part in parts) == [1, 256]


def test_dask_local_gives_each_worker_its_share_of_the_cores(small_model):
    cores = min(available_cores(), numba.config.NUMBA_NUM_THREADS)
    with local_cluster(1) as cluster, Client(cluster) as client:
        register_model(client, small_model[1])
        assert list(client.nthreads().values()) == [1]  # one task at a time
        assert list(client.run(mobinumba.get_threads).values()) == [cores]


def test_iter_results_and_the_cli_on_a_scheduler_match_the_single_machine_run(
        cluster, small_model, images, expected, tmp_path, capsys):
    local, client = cluster

    def plugins(dask_worker):
        return sorted(name for name in dask_worker.plugins if name.startswith("mobinumba"))

    name = ModelPlugin(small_model[1]).name
    client.unregister_worker_plugin(name)  # registered by the dataframe tests
    parts = list(iter_results(client, images, weights=small_model[1], topk=TOPK,
                              partition_size=4))
    assert sorted(len(part) for part in parts) == [3] + [4] * 7
    assert rows_by_path(r for part in parts for r in part) == rows_by_path(expected)
    assert set(map(tuple, client.run(plugins).values())) == {()}  # removed after the run
    register_model(client, small_model[1])
    list(iter_results(client, images[:3], weights=small_model[1], topk=TOPK))
    assert set(map(tuple, client.run(plugins).values())) == {(name,)}  # kept: was there
    out = tmp_path / "results.jsonl"
    assert run_cli("predict", *images, "--weights", small_model[1], "--topk", TOPK,
                   "--out", out, "--dask-scheduler", local.scheduler_address,
                   "--partition-size", 5) == 1
    assert sorted(read_results(out), key=lambda r: r["path"]) == rows_by_path(expected)
    assert "broken.png" in capsys.readouterr().err


def test_cli_dask_local_matches_the_single_machine_file(small_model, images, tmp_path,
                                                        monkeypatch):
    """Relative paths too: the workers open them under the client's working directory."""
    here, there = tmp_path / "here.csv", tmp_path / "there.csv"
    monkeypatch.chdir(os.path.dirname(images[0]))
    common = (".", "--weights", small_model[1], "--topk", TOPK)
    assert run_cli("predict", *common, "--out", here) == 1
    assert run_cli("predict", *common, "--out", there, "--dask-local", 2,
                   "--partition-size", 6) == 1
    rows = read_results(here)
    assert len(rows) == 31 and rows[0]["path"] == "./broken.png"
    assert rows[0]["error"].startswith("./broken.png: ")  # the path as given, in the error too
    assert sorted(read_results(there), key=lambda r: r["path"]) == rows


def processing_counts(client):
    """How many times the scheduler has started each mobinumba task."""
    def count(dask_scheduler):
        return collections.Counter(t.key for t in dask_scheduler.transition_log
                                   if t.finish == "processing"
                                   and "mobinumba-predict" in str(t.key))
    return client.run_on_scheduler(count)


def kill_worker(client, address):
    """SIGKILL a worker process and wait until the scheduler has dropped it."""
    pid = client.run(os.getpid, workers=[address])[address]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT_S
    while address in client.scheduler_info()["workers"]:
        assert time.monotonic() < deadline, "the scheduler did not notice the dead worker"
        time.sleep(0.05)


def hold_model_lock(name, dask_worker):
    """Take the model plugin's lock on a worker and keep it: that worker's next task blocks
    inside predict_partition, waiting for its model, until the worker dies."""
    return dask_worker.plugins[name]._lock.acquire(timeout=WAIT_S)


def test_a_worker_killed_in_the_middle_of_a_task_loses_and_duplicates_nothing(
        cluster, small_model, images, expected):
    """One worker's tasks block inside the task function; once the other worker has done all
    it can (and its partitions' rows have been collected), the blocked worker is killed, and
    Dask must run the partitions it had again."""
    _, client = cluster
    client.wait_for_workers(2, timeout=WAIT_S)
    plugin = register_model(client, small_model[1])  # kept: tasks find it at once
    victim, other = sorted(client.nthreads())
    assert client.run(hold_model_lock, name=plugin.name, workers=[victim]) == {victim: True}
    before = processing_counts(client)  # earlier tests ran the same tasks (same keys)
    collected = []
    consumer = threading.Thread(target=lambda: collected.extend(
        r for part in iter_results(client, images, weights=plugin, topk=TOPK,
                                   partition_size=4) for r in part), daemon=True)
    consumer.start()
    deadline = time.monotonic() + WAIT_S
    while True:  # until the other worker is idle and the victim is stuck in a task
        processing = client.processing()
        if collected and processing.get(victim) and not processing.get(other):
            break
        assert time.monotonic() < deadline, (len(collected), processing)
        time.sleep(0.05)
    blocked = set(processing[victim])
    assert 0 < len(collected) < len(images)  # the run is half done: rows are out already
    kill_worker(client, victim)
    consumer.join(WAIT_S)
    assert not consumer.is_alive(), "the partitions of the killed worker never finished"
    counts = processing_counts(client)
    assert all(counts[key] - before[key] == 2 for key in blocked)  # again after the kill
    assert [row["path"] for row in rows_by_path(collected)] == images  # every path once
    assert rows_by_path(collected) == rows_by_path(expected)
    client.wait_for_workers(2, timeout=WAIT_S)  # the nanny has restarted the worker


def test_partitions_held_by_a_killed_worker_are_recomputed(cluster, small_model, images,
                                                           expected):
    _, client = cluster
    client.wait_for_workers(2, timeout=WAIT_S)
    frame = client.persist(predict_dataframe(client, images, weights=small_model[1],
                                             topk=TOPK, partition_size=2))
    wait(frame, timeout=WAIT_S)
    only_holder = collections.defaultdict(list)  # worker -> keys nobody else holds
    for key, addresses in client.who_has(futures_of(frame)).items():
        if len(addresses) == 1:
            only_holder[addresses[0]].append(key)
    victim = max(only_holder, key=lambda address: len(only_holder[address]))
    lost = only_holder[victim]
    assert lost, only_holder
    before = processing_counts(client)
    kill_worker(client, victim)
    computed = frame.compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(computed, results_frame(expected, TOPK))
    after = processing_counts(client)
    recomputed = {key for key in after if after[key] > before.get(key, 0)}
    # Keys are (name, partition number); the persisted ones may be a string-dtype layer on
    # top of the mobinumba-predict tasks: compare partition numbers.
    assert {key[1] for key in recomputed} == {key[1] for key in lost}
    client.wait_for_workers(2, timeout=WAIT_S)
