"""Installs: a wheel (not only an editable checkout), on a read-only package directory.

A wheel is built from a copy of the source and installed with `pip install --target` into
a temporary directory, which is then made read-only: with `chmod` for a normal user, and
for root (whom permission bits do not stop) with a read-only bind mount in a private mount
namespace (`unshare --mount`). Child processes import mobinumba from there (the test checks
that they do, and that the directory really refuses writes) and run a forward pass:
- with a writable user cache directory, Numba caches the kernels there instead;
- with no writable cache anywhere, the kernels compile in memory and everything works.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import mobinumba
from conftest import build_reference, run_cli

pytestmark = pytest.mark.slow  # builds wheels and installs them into fresh venvs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent("""
    import json, os, sys, warnings
    import numpy as np
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import mobinumba
    package = os.path.dirname(mobinumba.__file__)
    try:
        open(os.path.join(package, "probe"), "w").close()
        writable = True
    except OSError:
        writable = False
    x = np.random.default_rng(5).standard_normal((2, 3, 40, 40)).astype(np.float32)
    model = mobinumba.load(sys.argv[1])
    np.save(sys.argv[2], model(x))
    from mobinumba.convert.labels import imagenet_labels
    print(json.dumps({"file": mobinumba.__file__, "writable": writable,
                      "labels": len(imagenet_labels()),
                      "warnings": [str(w.message) for w in caught]}))
""")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site directory holding a wheel install of mobinumba, weights, their logits)."""
    directory = tmp_path_factory.mktemp("install")
    source = directory / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", "build", "dist", "tests", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(directory / "dist"), str(source)], check=True)
    wheels = list((directory / "dist").glob("mobinumba-*.whl"))
    assert len(wheels) == 1, wheels
    site = directory / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--target", str(site), str(wheels[0])], check=True)
    model = build_reference("classic", 0.25, "relu", head=False, num_classes=10, seed=9)
    torch.save(model.state_dict(), directory / "m.pth")
    weights = directory / "m.h5"
    assert run_cli("convert", directory / "m.pth", "-o", weights, "--no-check") == 0
    x = np.random.default_rng(5).standard_normal((2, 3, 40, 40)).astype(np.float32)
    return site, weights, mobinumba.load(weights)(x)


def run_read_only(site, argv, env):
    """Run `python argv...` importing from `site`, with `site` read-only to it."""
    env = {key: value for key, value in env.items() if key != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = str(site)
    command = [sys.executable, *argv]
    if os.geteuid() == 0:
        # Root ignores permission bits: give the child a read-only view of the directory.
        mount = (f'mount --bind "{site}" "{site}" && '
                 f'mount -o remount,bind,ro "{site}" && exec "$@"')
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount,
                   "sh", *command]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                              cwd=site.parent)
    subprocess.run(["chmod", "-R", "a-w", str(site)], check=True)
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                              cwd=site.parent)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(site)], check=True)


def run_child(installed, tmp_path, env):
    site, weights, expected = installed
    result = run_read_only(site, ["-c", CHILD, str(weights), str(tmp_path / "logits.npy")],
                           env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(site)), report  # the wheel install, not the checkout
    assert not report["writable"], "the package directory should have been read-only"
    assert report["labels"] == 1000  # package data came with the wheel
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=0, atol=1e-5)
    assert not list(site.rglob("*.nbi")), "Numba wrote into the read-only package"
    return report


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    """A writable user cache directory (XDG_CACHE_HOME) shared by the tests below."""
    return tmp_path_factory.mktemp("xdg-cache")


def test_wheel_on_read_only_directory_caches_in_the_user_cache(installed, tmp_path,
                                                                cache_home):
    report = run_child(installed, tmp_path, dict(os.environ, XDG_CACHE_HOME=str(cache_home)))
    assert not any("no writable cache" in w for w in report["warnings"]), report
    assert len(list((cache_home / "numba").rglob("*.nbi"))) >= 5


def test_wheel_with_no_writable_cache_anywhere_still_runs(installed, tmp_path):
    site = installed[0]
    # The user cache directory points inside the read-only tree too.
    report = run_child(installed, tmp_path, dict(os.environ, XDG_CACHE_HOME=str(site / "cache"),
                                                 HOME=str(site / "home")))
    assert any("no writable cache directory" in w for w in report["warnings"]), report


def test_wheel_console_script(installed, tmp_path, cache_home):
    site, weights, _ = installed
    image = tmp_path / "photo.png"
    from PIL import Image
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 60, 3), np.uint8)).save(image)
    script = site / "bin" / "mobinumba"
    assert script.exists()
    result = run_read_only(site, [str(script), "predict", "--weights", str(weights),
                                  str(image), "--json"],
                           dict(os.environ, XDG_CACHE_HOME=str(cache_home)))
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads(result.stdout)[0]["predictions"]
    expected = mobinumba.load(weights).predict([image], topk=5)[0]
    assert [p["index"] for p in predictions] == [p.index for p in expected]
