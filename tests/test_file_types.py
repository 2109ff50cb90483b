"""Messages that say what a wrong file is (issue 13 item 4).

Each format's file is written by that format's own tools (tests/foreign_files.py) and given
to `convert`, `predict --weights`, `inspect` and mobinumba.load(): each answer is exit status
1 with one line on stderr naming the format and what to do, and no output file. Checkpoints
of other well-known nets are named from their keys. The sniffer is fuzzed with random and
truncated headers. A missing optional package (pandas hidden by an import hook in a
subprocess) is a one-line error naming the extra.
"""
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

import foreign_files
import mobinumba
from conftest import build_reference, run_cli
from fuzzing import examples
from mobinumba import filetype
from mobinumba.convert.checkpoint import _torch_reason
from mobinumba.convert.known_nets import name_network
from mobinumba.model import default_weights_path

CONVERT_READS = ("mobinumba convert reads PyTorch checkpoints (.pth/.safetensors), TF-slim "
                 "frozen graphs (.pb), Keras models (.h5/.keras) and TensorFlow Lite models "
                 "(.tflite)")
RUNTIME_READS = ("not a mobinumba weight file; mobinumba reads only its own .h5 files, made "
                 "by `mobinumba convert` from PyTorch checkpoints (.pth/.safetensors), "
                 "TF-slim frozen graphs (.pb), Keras models (.h5/.keras) or TensorFlow Lite "
                 "models (.tflite)")
KERAS_WEIGHTS_ADVICE = ("; Keras weights alone lack the model's config: save the whole model "
                        "(model.save('model.keras')) and convert that")

# file name -> (writer, the FileType identify() must give)
SAMPLES = {
    "mobilenet.h5": (foreign_files.write_keras_h5, filetype.KERAS_H5),
    "userblock.h5": (lambda path: foreign_files.write_keras_h5(path, userblock=1024),
                     filetype.KERAS_H5),
    "weights.h5": (foreign_files.write_keras_weights, filetype.KERAS_WEIGHTS),
    "model.keras": (foreign_files.write_keras_v3, filetype.KERAS_V3),
    "plain.h5": (foreign_files.write_plain_hdf5, filetype.HDF5),
    "model.tflite": (foreign_files.write_tflite, filetype.TFLITE),
    "model.onnx": (foreign_files.write_onnx, filetype.ONNX),
    "graph.pb": (foreign_files.write_graphdef, filetype.GRAPHDEF),
    "model.safetensors": (foreign_files.write_safetensors, filetype.SAFETENSORS),
    "model.pth": (foreign_files.write_torch_zip, filetype.TORCH_ZIP),
    "legacy.pth": (foreign_files.write_torch_legacy, filetype.TORCH_LEGACY),
    "data.pkl": (foreign_files.write_pickle, filetype.PICKLE),
    "shipped.h5": (lambda path: shutil.copy(default_weights_path(), path), filetype.MOBINUMBA),
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """{file name: path} of one file per format."""
    directory = tmp_path_factory.mktemp("formats")
    paths = {}
    for name, (write, _) in SAMPLES.items():
        write(directory / name)
        paths[name] = directory / name
    return paths


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "photo.png"
    Image.new("RGB", (40, 30), (120, 30, 200)).save(path)
    return path


def cli_error(capsys, *argv):
    """The one stderr line (without its 'mobinumba: error: ' prefix) of a CLI run that must
    exit with status 1."""
    assert run_cli(*argv) == 1, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mobinumba: error: "), err
    assert "Traceback" not in err
    return err[len("mobinumba: error: "):-1]


# ------------------------------------------------------------------------------ identify

@pytest.mark.parametrize("name", SAMPLES)
def test_each_format_is_identified(samples, name):
    assert filetype.identify(samples[name]) is SAMPLES[name][1]


def test_format_is_told_by_content_not_name(samples, tmp_path):
    """The same bytes under a misleading name are identified the same way."""
    for name in ("mobilenet.h5", "model.keras", "model.tflite", "model.onnx",
                 "model.safetensors", "model.pth", "legacy.pth", "shipped.h5"):
        renamed = tmp_path / f"{name}.bin"
        shutil.copy(samples[name], renamed)
        assert filetype.identify(renamed) is SAMPLES[name][1], name


def test_what_is_not_recognised(tmp_path):
    cases = {"empty.pth": b"", "text.pb": b"hello world\n", "zip.zip": None,
             "protocol0.pkl": pickle.dumps({"a": 1}, protocol=0),
             # a protobuf of one varint field that is not ONNX's ir_version layout
             "varint.onnx": b"\x08\x07\x10\x01"}
    for name, data in cases.items():
        path = tmp_path / name
        if data is None:
            import zipfile
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("readme.txt", "not a model")
        else:
            path.write_bytes(data)
        assert filetype.identify(path) is None, name
    assert filetype.identify(tmp_path / "absent.h5") is None
    assert filetype.identify(tmp_path) is None  # a directory


# ------------------------------------------------------------------------------- convert

def expected_convert_message(path, name):
    kind = SAMPLES[name][1]
    if kind.name == "keras_weights":
        return f"{path}: this is {kind.description}; {CONVERT_READS}{KERAS_WEIGHTS_ADVICE}"
    family = {"onnx": "ONNX"}.get(kind.name)
    return (f"{path}: this is {kind.description}; {CONVERT_READS}"
            + (f"; {family} files are not supported yet" if family else ""))


def test_convert_names_formats_it_does_not_read(samples, tmp_path, capsys):
    out = tmp_path / "out.h5"
    # Keras models are read now (tests/test_keras.py); these samples have no layers.
    for name in ("mobilenet.h5", "userblock.h5", "model.keras"):
        message = cli_error(capsys, "convert", samples[name], "-o", out)
        assert message == (f"{samples[name]}: Keras model 'mobilenet_1.00_224': ends where "
                           f"MobileNetV1 has the stem conv"), message
        assert not out.exists()
    expected = {
        "weights.h5": "this is a Keras HDF5 weights file (save_weights); ",
        "model.onnx": "this is an ONNX model; ",
        "plain.h5": "this is an HDF5 file; ",
    }
    for name, words in expected.items():
        message = cli_error(capsys, "convert", samples[name], "-o", out)
        assert message == expected_convert_message(samples[name], name), message
        assert words in message
        assert "PyTorch checkpoint (" not in message and "weights_only" not in message
        assert not out.exists()
    # A .tflite is read (tests/test_tflite.py); this one is a bare flatbuffer, no model.
    message = cli_error(capsys, "convert", samples["model.tflite"], "-o", out)
    assert message == (f"{samples['model.tflite']}: not a valid TensorFlow Lite model: 0 "
                       f"subgraphs; a MobileNetV1 file has exactly one")
    assert not out.exists()


def test_convert_on_a_mobinumba_file_says_it_is_one_already(samples, tmp_path, capsys):
    path = samples["shipped.h5"]
    assert cli_error(capsys, "convert", path, "-o", tmp_path / "o.h5") == (
        f"{path}: is already a mobinumba weight file; use it as it is "
        f"(mobinumba predict --weights {path} ...)")


def test_convert_refuses_a_reader_the_name_picks_wrongly(samples, tmp_path, capsys):
    """convert picks its reader by the file name; bytes of another reader's kind say so."""
    cases = {"model.safetensors": ("weights.bin", "a safetensors checkpoint", ".safetensors"),
             "graph.pb": ("graph.pth", "a TensorFlow GraphDef", ".pb"),
             "model.pth": ("model.pb", "a PyTorch checkpoint", ".pth")}
    for name, (renamed, description, suffix) in cases.items():
        path = tmp_path / renamed
        shutil.copy(samples[name], path)
        assert cli_error(capsys, "convert", path, "-o", tmp_path / "o.h5") == (
            f"{path}: this is {description}, but mobinumba convert picks its reader by the "
            f"file name; name it *{suffix}")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_torch_weights_only_advice_never_reaches_the_user(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": Exploit()}, tmp_path / "evil.pth")
    (tmp_path / "raw.pth").write_bytes(pickle.dumps({"a": Exploit()}, protocol=4))
    for name, reason in (("evil.pth", "unsupported GLOBAL posix.system"),
                         ("raw.pth", "Unsupported operand")):
        message = cli_error(capsys, "convert", tmp_path / name, "-o", tmp_path / "o.h5")
        assert message.startswith(f"{tmp_path / name}: not a readable PyTorch checkpoint "
                                  f"(UnpicklingError: refused by torch's safe loader: ")
        reason_text = message[len(str(tmp_path / name)):]  # tmp_path holds the test's name
        assert reason in reason_text
        assert "weights_only" not in reason_text and "False" not in reason_text, message
        assert not marker.exists()


def test_torch_reason_drops_every_advice_sentence():
    """torch 2.6+'s refusal texts (as torch 2.13 words them): the reason stays, the advice
    to load with weights_only=False goes."""
    preamble = ("Weights only load failed. In PyTorch 2.6, we changed the default value of "
                "the `weights_only` argument in `torch.load` from `False` to `True`. Re-running "
                "`torch.load` with `weights_only` set to `False` will likely succeed, but it "
                "can result in arbitrary code execution. Do it only if you got the file from a "
                "trusted source.")
    legacy = ("Cannot use ``weights_only=True`` with files saved in the legacy .tar format. "
              + preamble[len("Weights only load failed. "):])
    assert _torch_reason(RuntimeError(legacy)) == (
        "refused by torch's safe loader: Cannot use ``weights_only=True`` with files saved in "
        "the legacy .tar format.")
    assert _torch_reason(RuntimeError(preamble)) == "refused by torch's safe loader"
    # No advice: the first line, as before.
    assert _torch_reason(RuntimeError("PytorchStreamReader failed\nat line 2")) == (
        "PytorchStreamReader failed")


# ------------------------------------------------------------- predict, inspect, load

@pytest.mark.parametrize("name,command", [
    ("model.pth", "mobinumba convert {path} -o {stem}.h5"),
    ("legacy.pth", "mobinumba convert {path} -o {stem}.h5"),
    ("model.safetensors", "mobinumba convert {path} -o {stem}.h5"),
    ("data.pkl", "mobinumba convert {path} -o {stem}.h5"),
    ("graph.pb", "mobinumba convert {path} -o {stem}.h5"),
    ("mobilenet.h5", "mobinumba convert {path} -o {stem}.mobinumba.h5"),
    ("model.keras", "mobinumba convert {path} -o {stem}.h5"), ("weights.h5", None),
    ("model.tflite", "mobinumba convert {path} -o {stem}.h5"), ("model.onnx", None),
])
def test_predict_inspect_and_load_say_what_the_file_is(samples, image, capsys, name, command):
    path = str(samples[name])
    kind = SAMPLES[name][1]
    if command:
        stem = os.path.splitext(path)[0]
        expected = (f"{path}: this is {kind.description}, not a mobinumba weight file; "
                    f"convert it first: {command.format(path=path, stem=stem)}")
    else:
        advice = {"keras_weights": KERAS_WEIGHTS_ADVICE,
                  "tflite": "; TensorFlow Lite files are not supported yet",
                  "onnx": "; ONNX files are not supported yet"}[kind.name]
        expected = f"{path}: this is {kind.description}, {RUNTIME_READS}{advice}"
    assert cli_error(capsys, "predict", image, "--weights", path) == expected
    assert cli_error(capsys, "inspect", path) == expected
    with pytest.raises(mobinumba.FormatError) as error:
        mobinumba.load(path)
    assert str(error.value) == expected


def test_the_convert_command_it_suggests_works(tmp_path, capsys):
    """The suggested command, run as given, converts the checkpoint; a checkpoint named .h5
    gets an output name that is not its own."""
    state = build_reference("timm", 0.25, "relu6", head=False, num_classes=10).state_dict()
    source = tmp_path / "my model.h5"
    torch.save(state, source)
    message = cli_error(capsys, "inspect", source)
    command = message.split("convert it first: ")[1]
    assert command == f"mobinumba convert '{source}' -o '{tmp_path / 'my model.mobinumba.h5'}'"
    import shlex
    argv = shlex.split(command)
    assert run_cli(*argv[1:], "--no-check") == 0
    assert mobinumba.load(tmp_path / "my model.mobinumba.h5").num_classes == 10


def test_other_hdf5_files_keep_the_attribute_message(samples, capsys):
    path = samples["plain.h5"]
    assert cli_error(capsys, "inspect", path) == f"{path}: missing attribute 'format'"


# -------------------------------------------------------------------- other networks

@pytest.mark.parametrize("name", foreign_files.OTHER_NETS)
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_other_networks_are_named_from_their_keys(tmp_path, capsys, name, fmt):
    make, words = foreign_files.OTHER_NETS[name]
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "pth":
        torch.save(make(), path)
    else:
        save_file(make(), path)
    message = cli_error(capsys, "convert", path, "-o", tmp_path / "o.h5")
    assert message.startswith(f"{path}: mobinumba runs MobileNetV1; {words}"), message
    assert "--layout" not in message and "unknown layout" not in message
    assert not (tmp_path / "o.h5").exists()


def test_mobilenet_v1_layouts_are_never_named_as_other_networks():
    for layout, head in (("timm", False), ("timm", True), ("classic", False)):
        state = build_reference(layout, 0.25, "relu", head=head).state_dict()
        assert name_network(state) is None, (layout, head)
        assert name_network({f"module.{key}" for key in state}) is None


def test_unknown_keys_still_suggest_a_layout(tmp_path, capsys):
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "odd.pth")
    message = cli_error(capsys, "convert", tmp_path / "odd.pth", "-o", tmp_path / "o.h5")
    assert "unknown layout" in message and "force one with --layout" in message


# ----------------------------------------------------------------------------- fuzzing

HEADERS = [b"", filetype.HDF5_SIGNATURE, b"\x00" * 512 + filetype.HDF5_SIGNATURE,
           b"PK\x03\x04", b"PK\x05\x06", b"\x10\x00\x00\x00TFL3", b"\x40\x00\x00\x00\x00\x00"
           b"\x00\x00{", filetype.TORCH_LEGACY_MAGIC, b"\x80\x02", b"\x80\x05", b"\x08\x07",
           b"\x08\x07\x12\x05onnx!\x3a\x02", b"\x0a\x10\x0a\x05input\x12\x0bPlaceholder"]


@examples(400)
@given(header=st.sampled_from(HEADERS), tail=st.binary(max_size=200),
       suffix=st.sampled_from([".pb", ".h5", ".pth", ".onnx", ""]))
def test_identify_never_raises_on_random_headers(tmp_path_factory, header, tail, suffix):
    path = tmp_path_factory.getbasetemp() / f"random{suffix}"
    path.write_bytes(header + tail)
    found = filetype.identify(path)
    assert found is None or isinstance(found, filetype.FileType)


def test_identify_never_raises_on_truncated_files(samples, tmp_path):
    """Every sample cut at 40 points: identified, or not, without an exception; and the
    weight-file reader refuses each cut with a FormatError only."""
    for name, source in samples.items():
        data = source.read_bytes()
        for cut in sorted({len(data) * step // 40 for step in range(40)}):
            path = tmp_path / f"cut-{name}"
            path.write_bytes(data[:cut])
            found = filetype.identify(path)
            assert found is None or isinstance(found, filetype.FileType), (name, cut)
            with pytest.raises(mobinumba.FormatError):
                mobinumba.load(path)


# ----------------------------------------------------------------- optional packages

HIDE_IMPORTS = textwrap.dedent('''
    import os, sys
    HIDDEN = set(os.environ["HIDE_MODULES"].split(","))

    class HideModules:
        """A meta-path finder that makes the packages in HIDE_MODULES not installed."""
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, HideModules())
''')


def run_without(tmp_path, modules, *argv):
    """Run `python *argv` with `modules` made uninstalled by a sitecustomize import hook."""
    hook = tmp_path / "hide"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HIDE_IMPORTS)
    root = os.path.dirname(os.path.dirname(mobinumba.__file__))
    env = dict(os.environ, HIDE_MODULES=",".join(modules),
               PYTHONPATH=os.pathsep.join([str(hook), root]))
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("missing", ["pandas", "distributed"])
def test_dask_run_without_its_packages_is_a_one_line_error(tmp_path, image, missing):
    result = run_without(tmp_path, [missing], "-m", "mobinumba.cli", "predict", str(image),
                         "--out", str(tmp_path / "r.csv"), "--dask-local", "2")
    assert result.returncode == 1, result.stderr
    assert result.stderr == (f"mobinumba: error: --dask-scheduler / --dask-local need Dask: "
                             f"pip install 'mobinumba[dask]' ({missing} is not installed)\n")
    assert not (tmp_path / "r.csv").exists()


def test_the_hook_really_hides_the_package(tmp_path):
    """The same hook in the same interpreter: pandas is importable without it, not with it."""
    check = "import pandas; print('imported')"
    assert run_without(tmp_path, [], "-c", check).stdout == "imported\n"
    result = run_without(tmp_path, ["pandas"], "-c", "import mobinumba.dask")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == ("ImportError: mobinumba.dask needs pandas: pip "
                                              "install 'mobinumba[dask]'")
