"""The OpenMP spin count mobinumba gives libgomp at import, and the user's environment winning.

libgomp reads its environment once, when it is loaded; with OMP_DISPLAY_ENV=VERBOSE it prints
the values it took on stderr, which is what these tests read (not os.environ), each in a
fresh process.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mobinumba
from mobinumba import threads

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mobinumba.__file__)))
CHILD = r"""
import json, os, sys
import numba
import numpy as np
import mobinumba
x = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
logits = mobinumba.load(sys.argv[1])(x) if len(sys.argv) > 1 else np.zeros(0, np.float32)
print(json.dumps({"layer": numba.threading_layer(), "logits": logits.tobytes().hex(),
                  "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}))
"""


def run_child(user_env, *argv):
    """(libgomp's displayed settings {name: value}, the child's JSON answer) for a fresh
    process importing mobinumba with `user_env` added to an environment without OpenMP
    wait settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user_env, OMP_DISPLAY_ENV="VERBOSE",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", CHILD, *map(str, argv)], env=env,
                            capture_output=True, text=True, check=True, cwd=ROOT)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if answer["layer"] != "omp":
        pytest.skip(f"Numba's threading layer here is {answer['layer']}, not omp (libgomp)")
    shown = dict(re.findall(r"^\s*(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'",
                            result.stderr, re.MULTILINE))
    return shown, answer


def test_default_spin_count_reaches_libgomp_and_leaves_environment_alone():
    shown, answer = run_child({})
    assert shown["GOMP_SPINCOUNT"] == threads.GOMP_SPINCOUNT
    # restored: child processes of the user's program see the user's environment
    assert answer["env"] == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}


def test_user_wait_policy_wins():
    shown, answer = run_child({"OMP_WAIT_POLICY": "ACTIVE"})
    assert shown["OMP_WAIT_POLICY"] == "ACTIVE"
    # libgomp's own spin count for ACTIVE, not ours
    assert shown["GOMP_SPINCOUNT"] == "30000000000"
    assert answer["env"] == {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None}


def test_user_spin_count_wins():
    shown, answer = run_child({"GOMP_SPINCOUNT": "7"})
    assert shown["GOMP_SPINCOUNT"] == "7"
    assert answer["env"] == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "7"}


def test_logits_bit_identical_with_libgomp_default_spinning(small_model):
    _, path = small_model
    ours, with_ours = run_child({}, path)
    # GOMP_SPINCOUNT=300000 is libgomp's default, i.e. the run without mobinumba's setting
    theirs, with_default = run_child({"GOMP_SPINCOUNT": "300000"}, path)
    assert ours["GOMP_SPINCOUNT"] == threads.GOMP_SPINCOUNT
    assert theirs["GOMP_SPINCOUNT"] == "300000"
    logits = np.frombuffer(bytes.fromhex(with_ours["logits"]), np.float32)
    assert logits.size == 2 * 10 and np.isfinite(logits).all()
    assert with_ours["logits"] == with_default["logits"]
