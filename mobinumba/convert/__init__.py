"""Convert a source checkpoint into a mobinumba HDF5 weight file.

read the state dict -> detect (or take) the layout -> map keys to layer records, checking
every shape -> write atomically -> optionally check the written file against PyTorch.
One module per source layout; adding a layout means adding it to LAYOUTS.
"""
import os
from dataclasses import dataclass

from ..errors import CheckpointError
from ..weights import ARCH, FORMAT_VERSION, ModelFile, ModelInfo, write_model_file
from . import classic, timm
from .check import check_conversion, torch_available
from .checkpoint import read_state_dict, sha256_of
from .labels import resolve_labels
from .plan import records_from_plan

LAYOUTS = {module.NAME: module for module in (timm, classic)}


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
    check_difference: float | None = None
    check_allowed: float | None = None


def detect_layout(keys, source):
    """The name of the layout whose keys match, or CheckpointError listing what was found."""
    for name, module in LAYOUTS.items():
        if module.matches(keys):
            return name
    sample = ", ".join(sorted(keys)[:4])
    raise CheckpointError(f"{source}: unknown layout (keys: {sample}, ...); expected timm "
                          f"(conv_stem, blocks.*) or classic (model.0.0, model.1.0, ...); "
                          f"force one with --layout")


def convert_checkpoint(source, output, *, layout=None, activation=None, mean=None, std=None,
                       interpolation=None, crop_pct=None, input_size=224, bn_eps=None,
                       labels="auto", check=None, tolerance=1e-4, force=False):
    """Convert `source` to the HDF5 file `output`; returns a ConversionReport.

    Options left as None take the layout's defaults. check=None runs the self-check when
    torch is importable; check=True requires torch. The output is written atomically; when
    the check fails nothing is left at `output`.
    """
    source = os.fspath(source)
    output = os.fspath(output)
    if os.path.exists(output) and not force:
        raise CheckpointError(f"{output}: file exists (use --force to overwrite)")
    if check and not torch_available():
        raise CheckpointError("--check needs torch (pip install 'mobinumba[convert]')")
    state = read_state_dict(source)
    if layout is None:
        layout = detect_layout(set(state), source)
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    module = LAYOUTS[layout]
    defaults = module.DEFAULTS
    bn_eps = defaults["bn_eps"] if bn_eps is None else bn_eps
    plan = module.plan(set(state))
    records = records_from_plan(plan, state, bn_eps, source)
    num_classes = records[-1].weight.shape[0]
    last_block = [r for r in records if r.name.startswith("block")][-1]
    info = ModelInfo(
        arch=ARCH,
        format_version=FORMAT_VERSION,
        width_multiplier=round(last_block.weight.shape[0] / 1024, 4),
        num_classes=num_classes,
        input_size=input_size,
        activation=activation or defaults["activation"],
        padding="torch",
        mean=tuple(mean or defaults["mean"]),
        std=tuple(std or defaults["std"]),
        crop_pct=crop_pct or defaults["crop_pct"],
        interpolation=interpolation or defaults["interpolation"],
        source_file=_printable(os.path.basename(source)),
        source_sha256=sha256_of(source),
        source_layout=layout,
        converter_version=_version(),
    )
    model_file = ModelFile(info=info, layers=records,
                           labels=resolve_labels(labels, num_classes))
    report = ConversionReport(output=output, layout=layout,
                              width_multiplier=info.width_multiplier, num_classes=num_classes,
                              num_layers=len(records), head_conv=plan[-2].name == "conv_head",
                              activation=info.activation)
    run_check = torch_available() if check is None else check

    def verify(temp_path):
        if run_check:
            report.check_difference, report.check_allowed = check_conversion(
                temp_path, plan, state, info, bn_eps, tolerance)

    write_model_file(output, model_file, overwrite=force, verify=verify)
    return report


def _printable(name):
    """A file name as printable UTF-8 text: undecodable bytes and control characters -> '?'."""
    text = os.fsencode(name).decode("utf-8", errors="replace")
    return "".join(char if char.isprintable() else "?" for char in text)


def _version():
    from .. import __version__
    return __version__
