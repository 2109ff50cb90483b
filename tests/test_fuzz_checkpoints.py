"""Fuzzing the converter's input: corrupted .pth and .safetensors checkpoints.

Seeds: a width-0.25, 10-class timm checkpoint saved as a torch.save zip and as safetensors,
a classic-layout one in torch's legacy (non-zip) format, and two backbones without
classifier: a RetinaFace detector checkpoint (LeakyReLU 0.1, the backbone under `body.`
beside detector keys) and an SSD (`base_net.*` beside extras and headers). Cases corrupt the bytes
(mostly the pickle, zip directory or safetensors header, the rest the tensor data) or the
state dict itself (missing, extra and renamed keys, wrong shapes and dtypes, non-tensor
values, NaN / huge values, sparse / quantized / meta / stride-0 giant tensors, code that
a pickle would run). Each case runs `convert_checkpoint` in the isolated worker and must
end in CheckpointError naming the file and the key (or saying the file is not a
checkpoint), or convert and then agree with a float64 reference computed from the
checkpoint's own tensors. A pickle's code must never run.
"""
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from backbone_models import retinaface_backbone, retinaface_detector_state, ssd_model
from conftest import build_reference
from fuzzing import (STATS, FuzzWorker, Timer, apply_byte_edits, assert_few_uncompared,
                     at_least, check_answer, examples, examples_count,
                     structural_byte_edits)

NAMING = (r"'[^']+'|\b\w+(\.\w+)+\b|not a readable|does not hold a state dict|"
          r"unknown layout|state dict key")
# Building the odd tensors (quantized, nested) makes torch warn about its own APIs.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.slow]  # a fuzzer: ~1,000 cases in a worker process


class Seeds:
    """The seed checkpoints' bytes, and where their structure (not tensor data) lies."""

    def __init__(self, directory):
        self.directory = directory
        timm_model = build_reference("timm", 0.25, "relu6", head=False, num_classes=10,
                                     seed=21)
        classic_model = build_reference("classic", 0.25, "relu", head=False, num_classes=10,
                                        seed=22)
        self.state = {"timm": timm_model.state_dict(), "classic": classic_model.state_dict(),
                      "retinaface": retinaface_detector_state(retinaface_backbone(seed=23)),
                      "ssd": ssd_model(seed=24).state_dict()}
        self.files = {}  # name -> (bytes, layout, structure offsets)
        path = directory / "timm.pth"
        torch.save(self.state["timm"], path)
        self.files["timm.pth"] = (path.read_bytes(), "timm", _zip_structure(path))
        path = directory / "timm.safetensors"
        save_file({k: v.contiguous() for k, v in self.state["timm"].items()}, path)
        data = path.read_bytes()
        header = 8 + int.from_bytes(data[:8], "little")
        self.files["timm.safetensors"] = (data, "timm", np.arange(header))
        path = directory / "classic.pth"
        torch.save(self.state["classic"], path, _use_new_zipfile_serialization=False)
        data = path.read_bytes()
        self.files["classic.pth"] = (data, "classic", np.arange(min(len(data), 4096)))
        for layout in ("retinaface", "ssd"):
            path = directory / f"{layout}.pth"
            torch.save(self.state[layout], path)
            self.files[f"{layout}.pth"] = (path.read_bytes(), layout, _zip_structure(path))


def _zip_structure(path):
    """Offsets of a torch.save zip outside its tensor storages: pickle, headers, directory."""
    data = open(path, "rb").read()
    is_data = np.zeros(len(data), bool)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/data/" in info.filename:
                # Local file header: 30 bytes, then the name and the extra field.
                header = info.header_offset
                name_length, extra_length = struct.unpack_from("<HH", data, header + 26)
                start = header + 30 + name_length + extra_length
                is_data[start:start + info.compress_size] = True
    return np.flatnonzero(~is_data)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return Seeds(tmp_path_factory.mktemp("fuzz_checkpoints"))


@pytest.fixture(scope="module")
def worker(seeds):
    directory = seeds.directory
    process = FuzzWorker({"target": "checkpoint", "path": str(directory / "timm.pth"),
                          "layout": "timm", "output": str(directory / "warmup.h5")})
    yield process
    process.close()


def run_checkpoint_case(worker, seeds, path, layout):
    with Timer("checkpoints"):
        answer = worker.run({"target": "checkpoint", "path": str(path), "layout": layout,
                             "output": str(seeds.directory / "out.h5")})
    check_answer("checkpoints", answer, str(path), ("CheckpointError",), NAMING,
                 str(seeds.directory / "failures"))
    return answer


# ------------------------------------------------------------------------ byte mutations

@pytest.mark.parametrize("name,count", [("timm.pth", 200), ("timm.safetensors", 150),
                                        ("classic.pth", 100), ("retinaface.pth", 100),
                                        ("ssd.pth", 50)])
def test_byte_mutations(seeds, worker, name, count):
    data, layout, structure = seeds.files[name]
    path = seeds.directory / f"bytes-{name}"

    @examples(count)
    @given(edits=structural_byte_edits(len(data), structure))
    def case(edits):
        path.write_bytes(apply_byte_edits(data, edits))
        run_checkpoint_case(worker, seeds, path, layout)

    with STATS.watching() as seen:
        case()
    outcomes = seen.outcomes["checkpoints"]
    assert outcomes["refused"] >= at_least(count // 5) and outcomes["ok"] >= at_least(5), \
        (outcomes, sorted(seen.classes["checkpoints"]))


# ---------------------------------------------------------------- state-dict mutations

class Exploit:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def odd_value(kind, marker):
    """A value that is not a dense float tensor, of the given kind."""
    return {
        "int": 3, "str": "weights", "none": None, "list": [1.0, 2.0], "dict": {"a": 1},
        "size": torch.Size([8]), "int-tensor": torch.ones(8, dtype=torch.int64),
        "bool-tensor": torch.ones(8, dtype=torch.bool),
        "complex-tensor": torch.ones(8, dtype=torch.complex64),
        "sparse": torch.eye(8).to_sparse(), "meta": torch.empty(8, device="meta"),
        "quantized": torch.quantize_per_tensor(torch.ones(8), 0.1, 0, torch.qint8),
        "nested": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]),
        "expanded-giant": torch.zeros(1).expand(2 ** 20, 2 ** 20),
        "exploit": Exploit(marker),
    }[kind]


ODD_KINDS = ["int", "str", "none", "list", "dict", "size", "int-tensor", "bool-tensor",
             "complex-tensor", "sparse", "meta", "quantized", "nested", "expanded-giant",
             "exploit"]
# What a .safetensors file can hold: dense CPU tensors under string keys, materialised (a
# stride-0 "expanded-giant" would be 4 TiB), no wrapping dict, no top-level list.
SAFETENSORS_ODD_KINDS = ["int-tensor", "bool-tensor", "complex-tensor"]


@st.composite
def state_edits(draw, keys, fmt):
    """1-3 edits of the state dict: (kind, key, argument) tuples; for fmt "safetensors",
    only edits whose result safetensors can save."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        if fmt == "safetensors":
            kind = draw(st.sampled_from(["drop", "add", "rename", "reshape", "dtype", "odd",
                                         "poison", "wrap"]))
        else:
            kind = draw(st.sampled_from(["drop", "add", "rename", "reshape", "dtype", "odd",
                                         "poison", "wrap", "top-level", "key-type"]))
        key = draw(st.sampled_from(keys))
        if kind == "add":
            edits.append((kind, draw(st.sampled_from(["extra.weight", "blocks.9.9.conv.weight",
                                                      "fc.weight", "model.0.0.weight"])),
                          None))
        elif kind == "rename":
            edits.append((kind, key, draw(st.sampled_from(["x", key + "s", key.upper(),
                                                           "module." + key]))))
        elif kind == "reshape":
            edits.append((kind, key, draw(st.sampled_from(
                [(), (0,), (1,), (7,), (8, 3, 3, 3), (8, 1, 3, 3), (3, 3), (10, 256),
                 (16, 8, 1, 1, 1)]))))
        elif kind == "dtype":
            edits.append((kind, key, draw(st.sampled_from(
                ["float16", "bfloat16", "float64", "int32", "uint8", "bool", "complex64"]))))
        elif kind == "odd":
            edits.append((kind, key, draw(st.sampled_from(
                SAFETENSORS_ODD_KINDS if fmt == "safetensors" else ODD_KINDS))))
        elif kind == "poison":
            edits.append((kind, key, draw(st.sampled_from(
                [float("nan"), float("inf"), -1.0, 3e38, 1e30, 0.0]))))
        elif kind == "wrap" and fmt == "safetensors":  # a prefix, not a nested dict
            edits.append((kind, None, "module"))
        elif kind in ("wrap", "top-level"):
            edits.append((kind, None, draw(st.sampled_from(
                ["state_dict", "model", "module", "list", "tensor", "empty", "string"]))))
        else:
            edits.append((kind, key, draw(st.sampled_from([5, (1, 2), b"bytes"]))))
    return edits


def apply_state_edits(state, edits, marker):
    """The edited state dict (or whatever top-level object the edits make)."""
    state = dict(state)
    obj = state
    for kind, key, argument in edits:
        if not isinstance(obj, dict):
            break
        if kind == "drop":
            obj.pop(key, None)
        elif kind == "add":
            obj[key] = torch.ones(4)
        elif kind == "rename" and key in obj:
            obj[argument] = obj.pop(key)
        elif kind == "reshape":
            obj[key] = torch.randn(argument) if argument else torch.tensor(0.5)
        elif kind == "dtype" and torch.is_tensor(obj.get(key)):
            obj[key] = obj[key].to(getattr(torch, argument))
        elif kind == "odd":
            obj[key] = odd_value(argument, marker)
        elif (kind == "poison" and torch.is_tensor(obj.get(key)) and obj[key].is_floating_point()
              and obj[key].numel()):
            obj[key] = obj[key].clone()
            obj[key].view(-1)[0] = argument
        elif kind == "wrap":
            obj = ({f"module.{k}": v for k, v in obj.items()} if argument == "module"
                   else {argument: obj, "epoch": 3})
        elif kind == "top-level":
            obj = {"list": list(obj.values()), "tensor": torch.ones(3), "empty": {},
                   "string": "checkpoint"}.get(argument, obj)
        elif kind == "key-type" and key in obj:
            obj[argument] = obj.pop(key)
    return obj


def culprits(edits):
    """What a refusal of a state dict made by `edits` may name: an edited key (as drawn,
    renamed, or its module, as in "folding bn1 into conv_stem.weight"), or, for an edit of
    the whole object, the structure that is wrong."""
    names = ["unknown layout"]  # enough keys changed that no layout matches (it lists some)
    for kind, key, argument in edits:
        if kind in ("top-level", "wrap"):  # "wrap" puts the dict under a key of that name
            names += ["does not hold a state dict", "state dict key", argument]
        elif kind == "key-type":  # a "module." wrap then turns the new key into text
            names += ["state dict key", key, str(argument)]
        elif kind == "odd":  # torch's weights-only unpickler refuses what it cannot build
            names += [key, key.rsplit(".", 1)[0], "not a readable PyTorch checkpoint"]
        else:
            names += [key, key.rsplit(".", 1)[0]]
            if kind == "rename":
                names.append(argument)
    return names


def save_state(obj, path, fmt):
    """Save the edited state with torch.save or safetensors (state_edits draws only what
    safetensors can hold: a failure here is a bug of the strategy, and fails the test)."""
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in obj.items()}, path)
    else:
        torch.save(obj, path)


@pytest.mark.parametrize("layout,fmt,count", [("timm", "pth", 250), ("timm", "safetensors", 100),
                                              ("retinaface", "pth", 120)])
def test_state_dict_mutations(seeds, worker, layout, fmt, count):
    keys = sorted(seeds.state[layout])
    path = seeds.directory / f"state.{fmt}"
    marker = seeds.directory / "pwned"

    @examples(count)
    @given(edits=state_edits(keys, fmt))
    def case(edits):
        obj = apply_state_edits(seeds.state[layout], edits, marker)
        save_state(obj, path, fmt)
        answer = run_checkpoint_case(worker, seeds, path, layout)
        assert not marker.exists(), "a pickle ran code while loading"
        if answer["outcome"] == "refused":
            message = answer["message"]
            assert any(name in message for name in culprits(edits)), \
                f"the refusal names none of {culprits(edits)}: {message}"

    with STATS.watching() as seen:
        case()
    classes, cases = seen.classes["checkpoints"], seen.cases["checkpoints"]
    assert cases == examples_count(count)  # every drawn case was saved and ran
    assert len(classes) >= at_least(15 if fmt == "pth" and layout == "timm" else 8), \
        sorted(classes)
    assert_few_uncompared(seen, cases)


# ---------------------------------------------------------------- every listed problem

def _listed(state, marker):
    def edited(**changes):
        result = dict(state)
        for key, value in changes.items():
            key = key.replace("__", ".")
            if value is None:
                del result[key]
            else:
                result[key] = value
        return result

    return {
        "missing key": (edited(blocks__3__2__conv_pw__weight=None),
                        "missing key 'blocks.3.2.conv_pw.weight'"),
        "extra key": ({**state, "blocks.0.0.se.conv_reduce.weight": torch.zeros(4, 8, 1, 1)},
                      "1 unexpected key(s) for MobileNetV1: blocks.0.0.se.conv_reduce.weight"),
        "wrong shape": (edited(blocks__1__0__conv_dw__weight=torch.zeros(24, 1, 3, 3)),
                        "blocks.1.0.conv_dw.weight has shape (24, 1, 3, 3), expected (16, 1, "
                        "3, 3)"),
        "wrong BN length": (edited(bn1__running_var=torch.ones(7)),
                            "bn1.running_var has shape (7,), expected (8,)"),
        "string value": (edited(bn1__weight="gamma"),
                         "key 'bn1.weight': value is str, expected a tensor"),
        "int tensor": (edited(bn1__bias=torch.ones(8, dtype=torch.int64)),
                       "key 'bn1.bias': tensor has dtype int64, expected floating point"),
        "sparse tensor": (edited(classifier__bias=torch.ones(10).to_sparse()),
                          "key 'classifier.bias': is a sparse_coo tensor"),
        "quantized tensor": (edited(classifier__bias=torch.quantize_per_tensor(
            torch.ones(10), 0.1, 0, torch.qint8)), "key 'classifier.bias': is a quantized tensor"),
        "meta tensor": (edited(classifier__bias=torch.empty(10, device="meta")),
                        "key 'classifier.bias': tensor is on device 'meta'"),
        "nested tensor": (edited(classifier__bias=torch.nested.nested_tensor(
            [torch.ones(2), torch.ones(3)])), "key 'classifier.bias': is a nested tensor"),
        "stride-0 giant tensor": (edited(classifier__weight=torch.zeros(1).expand(
            2 ** 20, 2 ** 20)), "key 'classifier.weight': tensor of shape (1048576, 1048576) has "
                                "more than 67108864 elements"),
        "NaN": (edited(classifier__bias=torch.full((10,), float("nan"))),
                "classifier.bias contains NaN or Inf"),
        "negative variance": (edited(bn1__running_var=-torch.ones(8)),
                              "bn1.running_var has negative values"),
        "batch norm that overflows when folded": (
            edited(bn1__weight=torch.full((8,), 3e38), bn1__running_var=torch.zeros(8)),
            "folding bn1 into conv_stem.weight overflows float32"),
        "non-string key": ({**state, 5: torch.ones(3)}, "state dict key 5 is not a string"),
        "not a dict": ([1, 2, 3], "does not hold a state dict (found list)"),
        "code-executing pickle": ({"state_dict": Exploit(marker)},
                                  "not a readable PyTorch checkpoint"),
        "bfloat16 converts": ({k: v.to(torch.bfloat16) if v.is_floating_point() else v
                               for k, v in state.items()}, None),
        "float64 converts": ({k: v.double() if v.is_floating_point() else v
                              for k, v in state.items()}, None),
        "wrapped and prefixed converts": ({"state_dict": {f"module.{k}": v
                                                          for k, v in state.items()}}, None),
    }


def test_listed_problems(seeds, worker):
    marker = seeds.directory / "pwned-listed"
    for name, (obj, expected) in _listed(seeds.state["timm"], marker).items():
        path = seeds.directory / "listed.pth"
        torch.save(obj, path)
        answer = run_checkpoint_case(worker, seeds, path, "timm")
        if expected is None:
            assert answer["outcome"] == "ok" and answer["comparison"] == "compared", \
                (name, answer)
        else:
            assert answer["outcome"] == "refused" and expected in answer["message"], \
                (name, answer)
        assert not marker.exists(), name


def test_raw_pickle_that_runs_code_is_refused(seeds, worker):
    """A legacy (non-zip) torch file is a bare pickle: the same refusal, nothing runs."""
    marker = seeds.directory / "pwned-raw"
    path = seeds.directory / "raw.pth"
    path.write_bytes(pickle.dumps({"state_dict": Exploit(marker)}))
    answer = run_checkpoint_case(worker, seeds, path, "timm")
    assert answer["outcome"] == "refused", answer
    assert "not a readable PyTorch checkpoint" in answer["message"]
    assert not marker.exists()


def test_truncated_checkpoints(seeds, worker):
    """Every seed cut at 40 points: always refused, never converted."""
    for name, (data, layout, _) in seeds.files.items():
        path = seeds.directory / f"cut-{name}"
        for offset in np.linspace(0, len(data) - 1, 40, dtype=int):
            path.write_bytes(data[:offset])
            answer = run_checkpoint_case(worker, seeds, path, layout)
            assert answer["outcome"] == "refused", (name, offset, answer)
