"""Convert a source checkpoint into a mobinumba HDF5 weight file.

read the state dict (a frozen TensorFlow graph's constants for `.pb`, a TensorFlow Lite
model's weights for `.tflite`) -> detect (or take) the
layout -> map keys to layer records, checking every shape -> write atomically -> optionally
check the written file against PyTorch. One module per source layout; adding a layout means
adding it to LAYOUTS.

Each setting (activation, padding, batch-norm epsilon, preprocessing) comes from the first of:
the caller's option, what the source file states about itself (a graph's epsilon constants
and conv padding), the layout's DEFAULTS.
"""
import os
import time
from dataclasses import dataclass, field

from ..padding import PADDINGS
from ..errors import CheckpointError, check_regular_file
from ..filetype import (GRAPHDEF, PICKLE, SAFETENSORS, TFLITE, TORCH_LEGACY, TORCH_ZIP,
                        identify, not_a_checkpoint)
from ..weights import ARCH, FORMAT_VERSIONS, ModelFile, ModelInfo, write_model_file
from . import classic, tflite, tfslim, timm
from .check import (check_against_litert, check_conversion, check_int8_against_litert,
                    litert_available, torch_available)
from .checkpoint import read_state_dict, sha256_of
from .known_nets import name_network
from .labels import resolve_labels
from .plan import records_from_plan

LAYOUTS = {module.NAME: module for module in (timm, classic, tfslim, tflite)}
GRAPH_SUFFIX = ".pb"
TFLITE_SUFFIX = ".tflite"
SAFETENSORS_SUFFIX = ".safetensors"
# A test hook, not an option (tests/test_interrupts.py): when this environment variable
# names a path, the converter, its temp file complete and not yet checked nor moved into
# place, creates PATH.paused, waits until PATH exists, then removes PATH.paused and goes on
# (to the self-check, if any), so that a test can signal it in exactly one of the windows.
PAUSE_BEFORE_CHECK = "MOBINUMBA_TEST_PAUSE_BEFORE_CHECK"


@dataclass
class ConversionReport:
    """What convert_checkpoint did: for the CLI to print and for tests to inspect."""

    output: str
    layout: str
    width_multiplier: float
    num_classes: int
    num_layers: int
    head_conv: bool
    activation: str
    padding: str
    bn_eps: float
    ignored: list = field(default_factory=list)
    check_difference: float | None = None
    check_allowed: float | None = None
    check_reference: str = "PyTorch"


def detect_layout(keys, source):
    """The name of the layout whose keys match, or CheckpointError naming the network when
    the keys are a known other one (a timm MobileNetV2 would pass timm's match), else
    listing what was found."""
    other = name_network(keys)
    if other is not None:
        raise CheckpointError(f"{source}: mobinumba runs MobileNetV1; this is {other}")
    for name, module in LAYOUTS.items():
        if module.matches(keys):
            return name
    sample = ", ".join(sorted(keys)[:4])
    raise CheckpointError(f"{source}: unknown layout (keys: {sample}, ...); expected timm "
                          f"(conv_stem, blocks.*), classic (model.0.0, model.1.0, ...) or a "
                          f"TF-slim graph (.pb); force one with --layout")


def read_source(source, padding=None):
    """(state dict, settings the file states, names it ignored) of a checkpoint or graph.

    A `.pb` file is a frozen TensorFlow graph read by tfslim.read_graph, a `.tflite` file a
    TensorFlow Lite model read by tflite.read_tflite_network (both take the user's `padding`
    override); anything else is a PyTorch state dict, which states nothing.
    A file recognised as another kind (a Keras, TFLite or ONNX model, a mobinumba weight
    file, or a checkpoint whose name picks the wrong reader) is refused with what it is.
    """
    reader = reader_for(source)
    # Before identify() opens it: a FIFO or a device would block or never end.
    check_regular_file(source, CheckpointError, {GRAPHDEF: "a GraphDef",
                                                 TFLITE: "a TensorFlow Lite model"}.get(
                                                     reader, "a checkpoint"))
    refuse_other_formats(source, reader)
    if reader is GRAPHDEF:
        return tfslim.read_graph(source, padding=padding)
    if reader is TFLITE:
        return tflite.read_tflite_network(source, padding=padding)
    return read_state_dict(source), {}, []


def reader_for(source):
    """The FileType whose reader the file's name picks: GRAPHDEF for `.pb`, TFLITE for
    `.tflite`, SAFETENSORS for `.safetensors`, TORCH_ZIP (torch.load, which reads both
    torch.save formats) otherwise."""
    name = source.lower()
    if name.endswith(GRAPH_SUFFIX):
        return GRAPHDEF
    if name.endswith(TFLITE_SUFFIX):
        return TFLITE
    return SAFETENSORS if name.endswith(SAFETENSORS_SUFFIX) else TORCH_ZIP


def refuse_other_formats(source, reader):
    """CheckpointError saying what `source` is when its bytes show a kind that `reader`
    (reader_for's choice) cannot read; unrecognised files are left to the reader."""
    found = identify(source)
    if found is None:
        return
    if not found.convertible:
        raise CheckpointError(not_a_checkpoint(source, found))
    torch_load_reads = (TORCH_ZIP, TORCH_LEGACY, PICKLE)
    if found is reader or (reader is TORCH_ZIP and found in torch_load_reads):
        return
    suffix = {GRAPHDEF: GRAPH_SUFFIX, SAFETENSORS: SAFETENSORS_SUFFIX,
              TFLITE: TFLITE_SUFFIX}.get(found, ".pth")
    raise CheckpointError(f"{source}: this is {found.description}, but mobinumba convert "
                          f"picks its reader by the file name; name it *{suffix}")


def convert_checkpoint(source, output, *, layout=None, activation=None, padding=None, mean=None,
                       std=None, interpolation=None, crop_pct=None, resize=None, input_size=None,
                       bn_eps=None,
                       labels="auto", check=None, tolerance=1e-4, force=False):
    """Convert `source` to the HDF5 file `output`; returns a ConversionReport.

    Options left as None take what the source states, else the layout's defaults (input_size:
    a `.tflite` file's input side, else 224). check=None runs the self-check when its
    reference is importable (LiteRT for a `.tflite` file, falling back to torch; torch for
    the others); check=True requires one. The output is written atomically; when the check
    fails nothing is left at `output`.
    """
    source = os.fspath(source)
    output = os.fspath(output)
    if os.path.exists(output) and not force:
        raise CheckpointError(f"{output}: file exists (use --force to overwrite)")
    from_tflite = reader_for(source) is TFLITE
    if check and not torch_available() and not (from_tflite and litert_available()):
        raise CheckpointError("--check needs torch (pip install 'mobinumba[convert]')")
    if layout is not None and layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if padding is not None and padding not in PADDINGS:
        raise CheckpointError(f"unknown padding {padding!r}; known: {', '.join(PADDINGS)}")
    if bn_eps is not None and from_tflite:
        raise CheckpointError(f"{source}: --bn-eps does not apply to a TensorFlow Lite model "
                              f"(its batch norms are folded into the convolutions)")
    state, stated, ignored = read_source(source, padding)
    int8 = "int8_records" in stated  # a fully quantized .tflite: records made by tflite.py
    if layout is None:
        layout = tflite.NAME if int8 else detect_layout(set(state), source)
    elif int8 and layout != tflite.NAME:
        raise CheckpointError(f"{source}: an int8 TensorFlow Lite model reads only as layout "
                              f"{tflite.NAME}")
    module = LAYOUTS[layout]

    def setting(name, option):
        if option is not None:
            return option
        return stated.get(name, module.DEFAULTS[name])

    bn_eps = setting("bn_eps", bn_eps)
    input_size = input_size if input_size is not None else stated.get("input_size", 224)
    plan = module.plan(set(state))
    records = stated["int8_records"] if int8 else records_from_plan(plan, state, bn_eps, source)
    num_classes = records[-1].weight.shape[0]
    last_block = [r for r in records if r.name.startswith("block")][-1]
    info = ModelInfo(
        arch=ARCH,
        width_multiplier=round(last_block.weight.shape[0] / 1024, 4),
        num_classes=num_classes,
        input_size=input_size,
        activation=setting("activation", activation),
        padding=setting("padding", padding),
        mean=tuple(setting("mean", mean)),
        std=tuple(setting("std", std)),
        crop_pct=setting("crop_pct", crop_pct),
        interpolation=setting("interpolation", interpolation),
        resize=setting("resize", resize),
        source_file=_printable(os.path.basename(source)),
        source_sha256=sha256_of(source),
        source_layout=layout,
        converter_version=_version(),
        **(dict(precision="int8", input_quantization=stated["input_quantization"],
                format_version=FORMAT_VERSIONS["int8"]) if int8 else {}),
    )
    model_file = ModelFile(info=info, layers=records,
                           labels=resolve_labels(labels, num_classes))
    report = ConversionReport(output=output, layout=layout,
                              width_multiplier=info.width_multiplier, num_classes=num_classes,
                              num_layers=len(records), head_conv=plan[-2].name == "conv_head",
                              activation=info.activation, padding=info.padding, bn_eps=bn_eps,
                              ignored=ignored)
    use_litert = from_tflite and litert_available()
    if check and int8 and not use_litert:
        raise CheckpointError("--check of an int8 .tflite needs ai-edge-litert (pip install "
                              "'mobinumba[tflite]')")
    run_check = (use_litert or (torch_available() and not int8)) if check is None else check

    def verify(temp_path):
        _pause_for_tests()
        if run_check and use_litert:
            report.check_reference = "LiteRT"
            if int8:
                report.check_reference = "LiteRT (int8 logits)"
                report.check_difference, report.check_allowed = check_int8_against_litert(
                    temp_path, source, stated["stem_input_tensor"], stated["logits_tensor"],
                    info)
            else:
                report.check_difference, report.check_allowed = check_against_litert(
                    temp_path, source, stated["logits_tensor"], info, tolerance)
        elif run_check:
            report.check_difference, report.check_allowed = check_conversion(
                temp_path, records, info, tolerance)

    write_model_file(output, model_file, overwrite=force, verify=verify)
    return report


def _pause_for_tests():
    """The PAUSE_BEFORE_CHECK test hook: nothing unless the variable is set."""
    hook = os.environ.get(PAUSE_BEFORE_CHECK)
    if not hook:
        return
    open(hook + ".paused", "w").close()
    # A converter whose test was killed must not wait forever (six orphans once did): give up
    # when the test's directory is gone or after 10 minutes, abandoning the conversion.
    deadline = time.monotonic() + 600
    while not os.path.exists(hook):
        if time.monotonic() > deadline or not os.path.exists(hook + ".paused"):
            raise CheckpointError(f"{PAUSE_BEFORE_CHECK}: nobody released {hook}")
        time.sleep(0.005)
    os.unlink(hook + ".paused")


def _printable(name):
    """A file name as printable UTF-8 text: undecodable bytes and control characters -> '?'."""
    text = os.fsencode(name).decode("utf-8", errors="replace")
    return "".join(char if char.isprintable() else "?" for char in text)


def _version():
    from .. import __version__
    return __version__
