"""Concurrent callers: threads sharing one Model, and processes sharing a cold JIT cache.

Numba's workqueue threading layer aborts the process when two threads enter parallel code
at once; mobinumba serialises forward passes with a process-wide lock (threads.py). The
tests check exact equality with serial calls under the default layer and under workqueue,
and that without the lock workqueue really does abort (so the test can fail).
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

import mobinumba
from conftest import build_reference, run_cli

THREADS = 8
CALLS = 20


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    directory = tmp_path_factory.mktemp("concurrency")
    model = build_reference("timm", 0.5, "relu6", head=False, num_classes=100, seed=8)
    torch.save(model.state_dict(), directory / "m.pth")
    assert run_cli("convert", directory / "m.pth", "-o", directory / "m.h5", "--no-check") == 0
    return directory / "m.h5"


def thread_input(thread, call):
    """A different input per thread and call; threads differ in batch and image size, so
    the model's workspace cache (4 shapes) is evicted and rebuilt under contention."""
    size = 24 + 8 * thread
    rng = np.random.default_rng(1000 * thread + call)
    return rng.standard_normal((1 + thread % 2, 3, size, size)).astype(np.float32)


def hammer(model):
    """Every thread's results, computed by THREADS threads started together."""
    results = [[None] * CALLS for _ in range(THREADS)]
    errors = []
    start = threading.Barrier(THREADS)

    def work(thread):
        try:
            start.wait()
            for call in range(CALLS):
                results[thread][call] = model(thread_input(thread, call))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def test_threads_share_one_model_exactly(small_weights):
    model = mobinumba.load(small_weights)
    serial = [[model(thread_input(t, c)) for c in range(CALLS)] for t in range(THREADS)]
    concurrent = hammer(model)
    for thread in range(THREADS):
        for call in range(CALLS):
            np.testing.assert_array_equal(concurrent[thread][call], serial[thread][call],
                                          err_msg=f"thread {thread}, call {call}")


SCRIPT = textwrap.dedent("""
    import contextlib, sys
    import numpy as np
    import mobinumba, numba
    sys.path.insert(0, {tests!r})
    from test_concurrency import CALLS, THREADS, hammer, thread_input
    model = mobinumba.load({weights!r})
    serial = [[model(thread_input(t, c)) for c in range(CALLS)] for t in range(THREADS)]
    if "--unguarded" in sys.argv:
        import mobinumba.model
        mobinumba.model.kernel_section = contextlib.nullcontext
    concurrent = hammer(model)
    assert numba.threading_layer() == "workqueue", numba.threading_layer()
    same = all(np.array_equal(concurrent[t][c], serial[t][c])
               for t in range(THREADS) for c in range(CALLS))
    print("identical" if same else "different")
""")


def run_workqueue(weights, *flags):
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue", NUMBA_NUM_THREADS="2")
    script = SCRIPT.format(tests=os.path.dirname(__file__), weights=str(weights))
    return subprocess.run([sys.executable, "-c", script, *flags], capture_output=True,
                          text=True, env=env, timeout=600)


@pytest.mark.slow  # a subprocess that compiles every kernel
def test_threads_under_the_workqueue_layer(small_weights):
    result = run_workqueue(small_weights)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "identical"


@pytest.mark.slow  # a subprocess that compiles every kernel
def test_without_the_lock_workqueue_aborts(small_weights):
    """The control: the same threads with the lock removed kill the process, which is why
    the lock is there (and shows the test above would catch its absence)."""
    result = run_workqueue(small_weights, "--unguarded")
    assert result.returncode != 0, result.stdout
    assert "Concurrent access has been detected" in result.stderr


@pytest.mark.slow  # a subprocess that compiles every kernel
def test_two_processes_fill_an_empty_jit_cache_at_once(small_weights, tmp_path):
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import mobinumba
        x = np.random.default_rng(5).standard_normal((2, 3, 40, 40)).astype(np.float32)
        np.save(sys.argv[1], mobinumba.load({str(small_weights)!r})(x))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    processes = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"{i}.npy")],
                                  env=env, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
    first, second = np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy")
    np.testing.assert_array_equal(first, second)
    x = np.random.default_rng(5).standard_normal((2, 3, 40, 40)).astype(np.float32)
    np.testing.assert_allclose(first, mobinumba.load(small_weights)(x), rtol=0, atol=1e-5)
    # Both compiled into the fresh cache (it was empty: nothing could have been reused).
    index_files = [name for _, _, names in os.walk(cache) for name in names
                   if name.endswith(".nbi")]
    assert len(index_files) >= 5, index_files
