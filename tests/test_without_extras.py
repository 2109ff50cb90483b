"""README: the runtime needs numba, numpy, h5py and Pillow only; `convert` reads .safetensors
without torch (the self-check is then off by default) and .pth without safetensors.

Each case runs the CLI in a fresh process in which an import hook makes the named packages
fail to import, as when they are not installed (nothing is uninstalled); its answers are
compared with this process's, which has every package.
"""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

import mobinumba
from conftest import build_reference, make_photos, random_batch, run_cli, torch_logits

pytestmark = pytest.mark.slow  # fresh interpreters that import numba

SAMPLE = Path(__file__).resolve().parent.parent / "weights" / "samples" / "grace_hopper.jpg"

# Runs mobinumba.cli.main on each argv of a JSON list with `hidden` packages unimportable;
# prints [{"rc", "out", "err"}, ...] and, last, the hidden modules that got imported anyway.
CHILD = textwrap.dedent("""
    import contextlib, io, json, sys
    from importlib.abc import MetaPathFinder

    HIDDEN = set(sys.argv[1].split(","))

    class NotInstalled(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    from mobinumba.cli import main

    answers = []
    for argv in json.loads(sys.argv[2]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
        answers.append({"rc": status, "out": out.getvalue(), "err": err.getvalue()})
    answers.append(sorted(m for m in sys.modules if m.partition(".")[0] in HIDDEN))
    print(json.dumps(answers))
""")


def run_without(hidden, *argvs):
    """The CLI's answers to each argv in one process where `hidden` cannot be imported."""
    result = subprocess.run([sys.executable, "-c", CHILD, ",".join(hidden),
                             json.dumps([[str(a) for a in argv] for argv in argvs])],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    *answers, imported = json.loads(result.stdout)
    assert imported == [], f"imported although not installed: {imported}"
    return answers


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """(reference module, .safetensors path, .pth path) of one width-0.25, 10-class model."""
    directory = tmp_path_factory.mktemp("extras")
    model = build_reference("timm", 0.25, "relu6", head=False, num_classes=10, seed=9)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, directory / "m.safetensors")
    import torch
    torch.save(state, directory / "m.pth")
    return model, directory / "m.safetensors", directory / "m.pth"


def test_without_torch_convert_reads_safetensors_and_the_model_runs(sources, small_model,
                                                                    tmp_path, capsys):
    reference, safetensors, pth = sources
    photos = make_photos(tmp_path / "photos", 3, seed=4)
    written = tmp_path / "no_torch.h5"
    answers = run_without(
        ["torch"],
        ["convert", safetensors, "-o", written, "--input-size", 64],
        ["convert", safetensors, "-o", tmp_path / "check.h5", "--check"],
        ["convert", pth, "-o", tmp_path / "pth.h5"],
        ["predict", *photos, "--weights", small_model[1], "--json"],
        ["predict", SAMPLE, "--topk", 3, "--json"])
    default, check, torch_file, predict_small, predict_shipped = answers

    assert default["rc"] == 0 and default["err"] == ""
    assert default["out"].splitlines()[-1] == "self-check skipped (torch is not installed)"
    x = random_batch(2, 64, seed=1)
    logits = mobinumba.load(written)(x)
    np.testing.assert_allclose(logits, torch_logits(reference, x), rtol=0,
                               atol=1e-4 * max(1.0, np.abs(logits).max()))
    assert run_cli("convert", safetensors, "-o", tmp_path / "here.h5", "--input-size", 64,
                   "--no-check") == 0
    np.testing.assert_array_equal(mobinumba.load(tmp_path / "here.h5")(x), logits)

    assert check == {"rc": 1, "out": "", "err": "mobinumba: error: --check needs torch "
                                                 "(pip install 'mobinumba[convert]')\n"}
    assert torch_file["rc"] == 1 and torch_file["err"] == (
        f"mobinumba: error: {pth}: reading torch.save checkpoints needs torch (pip install "
        f"'mobinumba[convert]'); .safetensors files do not\n")
    assert not (tmp_path / "check.h5").exists() and not (tmp_path / "pth.h5").exists()

    capsys.readouterr()
    for answer, argv in ((predict_small, [*photos, "--weights", small_model[1]]),
                         (predict_shipped, [SAMPLE, "--topk", 3])):
        assert answer["rc"] == 0 and answer["err"] == "", answer
        assert run_cli("predict", *argv, "--json") == 0
        assert json.loads(answer["out"]) == json.loads(capsys.readouterr().out)
    assert json.loads(predict_shipped["out"])[0]["predictions"][0]["label"] == "bow tie"


def test_without_safetensors_convert_reads_pth(sources, tmp_path):
    reference, safetensors, pth = sources
    refused, converted = run_without(["safetensors"],
                                     ["convert", safetensors, "-o", tmp_path / "a.h5"],
                                     ["convert", pth, "-o", tmp_path / "b.h5", "--input-size", 64])
    assert refused["rc"] == 1 and refused["err"] == (
        f"mobinumba: error: {safetensors}: reading .safetensors needs the safetensors package "
        f"(pip install 'mobinumba[convert]')\n")
    assert not (tmp_path / "a.h5").exists()
    assert converted["rc"] == 0, converted
    assert converted["out"].splitlines()[-1].startswith("self-check against PyTorch: ")
    x = random_batch(1, 64, seed=2)
    logits = mobinumba.load(tmp_path / "b.h5")(x)
    np.testing.assert_allclose(logits, torch_logits(reference, x), rtol=0,
                               atol=1e-4 * max(1.0, np.abs(logits).max()))
