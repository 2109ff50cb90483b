"""Convert a source checkpoint into a mobinumba HDF5 weight file.

read the state dict (a frozen TensorFlow graph's constants for `.pb`, a TensorFlow Lite
model's weights for `.tflite`) -> detect (or take) the
layout -> map keys to layer records, checking every shape -> write atomically -> optionally
check the written file against PyTorch. One module per source layout; adding a layout means
adding it to LAYOUTS. A layout module has NAME, DEFAULTS, matches(keys) and plan(keys), and
optionally SOURCE (what its network runs for certain: activation, slope, padding) and
ignored(keys) (keys of a detector around the backbone, reported and left out). A Keras model
(keras.py) brings its own plan, read from its config.

Each setting (activation, padding, batch-norm epsilon, preprocessing, input size) comes from
the first of: the caller's option, what the source file states about itself (a graph's
epsilon constants and conv padding, retrain.py's preprocessing when it has a retrained head,
a Keras model's config, a layout's SOURCE), the layout's DEFAULTS. A graph's retrain.py head
is folded into the classifier (retrained.py). The self-check's reference runs what the source
states, so an option that contradicts it fails the check.
"""
import os
import time
from dataclasses import dataclass, field

from ..activation import LEAKY_RELU, Activation, activation_problem
from ..padding import PADDINGS
from ..errors import CheckpointError, check_regular_file
from ..ops import kind_of
from ..filetype import (GRAPHDEF, HDF5, KERAS_H5, KERAS_V3, PICKLE, SAFETENSORS, TFLITE,
                        TORCH_LEGACY, TORCH_ZIP, identify, not_a_checkpoint)
from ..weights import ARCH, FORMAT_VERSIONS, ModelFile, ModelInfo, write_model_file
from . import classic, keras, keras_files, retinaface, ssd, tflite, tfslim, timm
from .check import (check_against_litert, check_conversion, check_int8_against_litert,
                    litert_available, torch_available)
from .checkpoint import read_state_dict, sha256_of
from .known_nets import name_network
from .labels import resolve_labels
from .plan import records_from_plan
from .retrained import CLASSIFIER as TF_CLASSIFIER
from .retrained import fold

LAYOUTS = {module.NAME: module for module in (timm, classic, tfslim, retinaface, ssd, tflite)}
GRAPH_SUFFIX = ".pb"
TFLITE_SUFFIX = ".tflite"
DEFAULT_INPUT_SIZE = 224
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
    num_classes: int  # 0: no classifier (a backbone)
    num_layers: int
    head_conv: bool
    activation: str  # as printed: "relu6", "leaky_relu (slope 0.1)"
    padding: str
    bn_eps: float
    head: str | None = None  # which head a TensorFlow graph's conversion used, in words
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
                          f"(conv_stem, blocks.*), classic (model.0.0, model.1.0, ...), "
                          f"RetinaFace (stage1.0.0, body.stage1.0.0), SSD (base_net.0.0) or "
                          f"a TF-slim graph (.pb); force one with --layout")


def read_source(source, padding=None, head=None):
    """(state dict, settings the file states, names it ignored) of a checkpoint or graph,
    or a keras.KerasSource for a Keras model.

    A Keras model (.h5 or .keras, recognised by its bytes whatever its name, or a `.keras`
    file not recognised as anything: a damaged archive) is read by keras.read_keras; a `.h5`
    not recognised as HDF5 is refused saying why h5py cannot open it. A `.pb` file is a
    frozen TensorFlow graph read by tfslim.read_graph (which takes the user's `padding`
    override and `head` choice), a `.tflite` file a TensorFlow Lite model read by
    tflite.read_tflite_network (which takes `padding`); anything else is a PyTorch state
    dict, which states nothing (and has no retrain.py head to choose). A file recognised as
    another kind (an ONNX model, a mobinumba weight file, or a checkpoint whose name picks
    the wrong reader) is refused with what it is.
    """
    reader = reader_for(source)
    # Before identify() opens it: a FIFO or a device would block or never end.
    check_regular_file(source, CheckpointError, {GRAPHDEF: "a GraphDef",
                                                 TFLITE: "a TensorFlow Lite model"}.get(
                                                     reader, "a checkpoint"))
    found = identify(source)
    if found in (KERAS_H5, KERAS_V3):
        return keras.read_keras(source, archive=found is KERAS_V3)
    if found is None and source.lower().endswith(".keras"):  # a damaged archive: say so
        return keras.read_keras(source, archive=True)
    if found is None and source.lower().endswith((".h5", ".hdf5")):  # damaged HDF5
        problem = keras_files.hdf5_problem(source)
        if problem is not None:
            raise CheckpointError(problem)
    refuse_other_formats(source, reader, found)
    if reader is GRAPHDEF:
        return tfslim.read_graph(source, padding=padding, head=head)
    if head is not None:
        raise CheckpointError(f"--head {head}: only TensorFlow graphs (.pb) have retrain.py "
                              f"heads; {source} is not one")
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


def refuse_other_formats(source, reader, found):
    """CheckpointError saying what `source` is when its bytes show a kind (`found`, from
    filetype.identify) that `reader` (reader_for's choice) cannot read; unrecognised files
    are left to the reader."""
    if found is None:
        return
    if found is HDF5:  # damaged, perhaps a Keras model's: say what is wrong with it
        raise CheckpointError(keras_files.hdf5_problem(source) or
                              not_a_checkpoint(source, found))
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
                       bn_eps=None, activation_slope=None, head=None,
                       labels="auto", check=None, tolerance=1e-4, force=False):
    """Convert `source` to the HDF5 file `output`; returns a ConversionReport.

    Options left as None take what the source states, else the layout's defaults
    (activation_slope goes with activation="leaky_relu"). head (for graphs): None or
    "retrained" converts a retrain.py head when there is one, "imagenet" the ImageNet logits
    under it. input_size None: the source's (a Keras model's, a `.tflite` file's, a graph's
    resize op), else 224. check=None runs the self-check when its reference is importable
    (LiteRT for a `.tflite` file, falling back to torch; torch for the others); check=True
    requires one. The output is written atomically; when the check fails nothing is left at
    `output`.
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
    read = read_source(source, padding, head)
    int8 = False
    semantics = {}
    if isinstance(read, keras.KerasSource):
        if layout is not None and layout != keras.NAME:
            raise CheckpointError(f"{source}: a Keras model is read from its own config; "
                                  f"--layout {layout} does not apply to it")
        state, stated, ignored = read.state, read.stated, read.ignored
        layout, defaults, plan, semantics = keras.NAME, {}, read.plan, read.semantics
    else:
        state, stated, ignored = read
        int8 = "int8_records" in stated  # a fully quantized .tflite: records made by tflite.py
        if layout is None:
            layout = tflite.NAME if int8 else detect_layout(set(state), source)
        elif int8 and layout != tflite.NAME:
            raise CheckpointError(f"{source}: an int8 TensorFlow Lite model reads only as "
                                  f"layout {tflite.NAME}")
        module = LAYOUTS[layout]
        stated = {**getattr(module, "SOURCE", {}), **stated}
        if hasattr(module, "ignored"):  # a detector's layers around the backbone
            outside = module.ignored(set(state))
            state = {key: value for key, value in state.items() if key not in set(outside)}
            ignored = ignored + outside
        defaults = module.DEFAULTS
        plan = module.plan(set(state))
    retrained = stated.get("retrained_head")
    if retrained is not None and labels == "imagenet":
        raise CheckpointError(f"--labels imagenet: {source}'s retrained head has its own "
                              f"{retrained.num_classes} classes; give its labels file "
                              f"(retrained_labels.txt) or use --head imagenet")

    def setting(name, option):
        if option is not None:
            return option
        return stated.get(name, defaults.get(name))

    bn_eps = setting("bn_eps", bn_eps)
    records = stated["int8_records"] if int8 else records_from_plan(plan, state, bn_eps, source)
    # The self-check's reference runs the source's layers with its own epsilon (Keras) and a
    # retrained head unfolded.
    reference_records = records
    if semantics.get("bn_eps", bn_eps) != bn_eps:
        reference_records = records_from_plan(plan, state, semantics["bn_eps"], source)
    source_records = records
    if retrained is not None:
        records = records[:-1] + [fold(records[-1], retrained)]
    has_classifier = kind_of(records[-1].kind).last
    num_classes = records[-1].weight.shape[0] if has_classifier else 0
    activation = _activation(setting("activation", activation), activation_slope, stated,
                             defaults)
    last_block = [r for r in records if r.name.startswith("block")][-1]
    info = ModelInfo(
        arch=ARCH,
        width_multiplier=round(last_block.weight.shape[0] / 1024, 4),
        num_classes=num_classes,
        input_size=setting("input_size", input_size) or DEFAULT_INPUT_SIZE,
        activation=activation.name,
        activation_slope=activation.slope,
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
                           labels=resolve_labels(
                               "none" if retrained is not None and labels == "auto" else labels,
                               num_classes))
    report = ConversionReport(output=output, layout=layout,
                              width_multiplier=info.width_multiplier, num_classes=num_classes,
                              num_layers=len(records),
                              head_conv=any(layer.name == "conv_head" for layer in plan),
                              activation=str(activation), padding=info.padding, bn_eps=bn_eps,
                              head=_head_used(retrained, head, source_records[-1]),
                              ignored=ignored)
    # The reference runs what the source states (a layout's SOURCE, a graph's padding), not
    # the options: converting to anything else must fail the check.
    reference_activation = (Activation(stated["activation"], stated.get("activation_slope"))
                            if "activation" in stated else activation)
    reference_padding = stated.get("padding", info.padding)
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
                temp_path, reference_records, info, tolerance, reference_activation,
                reference_padding, head=retrained)

    write_model_file(output, model_file, overwrite=force, verify=verify)
    return report


def _head_used(retrained, option, classifier):
    """The head a graph's conversion used, in words (None when there was no choice)."""
    if retrained is not None:
        return (f"retrained ({retrained.matmul} -> {retrained.output}, "
                f"{retrained.num_classes} classes), folded into {TF_CLASSIFIER}; "
                f"--head imagenet for the ImageNet logits")
    if option is not None:
        return f"ImageNet logits ({TF_CLASSIFIER}, {classifier.weight.shape[0]} classes)"
    return None


def _activation(name, slope, stated, defaults):
    """The Activation to write: `name` with the slope given, else the one the source states or
    the layout's default when the name is theirs; CheckpointError for a bad combination."""
    if name == LEAKY_RELU and slope is None:
        for settings in (stated, defaults):
            if settings.get("activation") == LEAKY_RELU:
                slope = settings.get("activation_slope")
                break
    problem = activation_problem(name, slope)
    if problem:
        raise CheckpointError(f"--activation: {problem}")
    return Activation(name, slope)


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
