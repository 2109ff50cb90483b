"""The `mobinumba` command: convert | export | quantize | predict | embed | inspect | bench.

User mistakes (bad paths, files, options) print one line `mobinumba: error: ...` on stderr
and exit with status 1 (2 for malformed command lines, from argparse); never a traceback.
"""
import argparse
import json
import os
import shlex
import sys

import numba
import numpy as np

from . import __version__
from .activation import ACTIVATIONS
from .errors import InputError, MobinumbaError, in_range
from .padding import PADDINGS
from .quantization import PRECISIONS
from .model import PREDICT_BATCH
from .stream import (DEFAULT_PARTITION_SIZE, MAX_BATCH_SIZE, MAX_DECODE_WORKERS,
                     MAX_PARTITION_SIZE)
from .weights import INTERPOLATIONS, RESIZE_MODES
from .threads import set_threads

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def main(argv=None):
    """Entry point of the `mobinumba` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if args.threads is not None:
            set_threads(args.threads)
        return args.handler(args)
    except MobinumbaError as error:
        print(f"mobinumba: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("mobinumba: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _bounded(kind, low, high, low_open=False):
    """An argparse type: `kind(text)` within [low, high] (or (low, high] if low_open)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}")
        if not in_range(value, low, high, low_open):
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{text} is not in {bracket}{low}, {high}]")
        return value
    return parse


def build_parser():
    """The argparse parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="mobinumba", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mobinumba {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=_bounded(int, 1, numba.config.NUMBA_NUM_THREADS),
                        default=None,
                        help="kernel threads (default: all cores)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser("convert", parents=[common],
                                  help="convert a PyTorch checkpoint, a TF-slim frozen graph, "
                                       "a Keras MobileNet or a TensorFlow Lite model to a "
                                       "mobinumba .h5 file")
    convert.add_argument("checkpoint", help=".pth / .pt / .pth.tar / .safetensors, a "
                                            "frozen TensorFlow graph .pb, a Keras model "
                                            ".h5 / .keras, or a TensorFlow Lite model "
                                            ".tflite (float32 or int8)")
    convert.add_argument("-o", "--output", required=True, help="the .h5 file to write")
    convert.add_argument("--layout", choices=_layout_names(), default=None,
                         help="source layout (default: detected from the keys; .pb files are "
                              "tf-slim)")
    convert.add_argument("--activation", choices=ACTIVATIONS, default=None,
                         help="override the layout's activation (timm, tf-slim: relu6; "
                              "classic: relu; retinaface: leaky_relu 0.1 and ssd: relu, "
                              "which their networks run: the self-check fails on another)")
    convert.add_argument("--activation-slope", type=_bounded(float, 0.0, 1.0),
                         default=None, help="leaky_relu's negative slope, in [0, 1)")
    convert.add_argument("--padding", choices=PADDINGS, default=None,
                         help="override the convolutions' padding (default: tf_same for "
                              "tf-slim graphs with SAME convs, else torch)")
    convert.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"))
    convert.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"))
    convert.add_argument("--interpolation", choices=INTERPOLATIONS,
                         help="resize filter: Pillow's, or bilinear_tf (TF 1.x resize_bilinear)")
    convert.add_argument("--resize", choices=RESIZE_MODES,
                         help="shorter_side: resize the shorter side to size/crop_pct, center "
                              "crop (timm); central_crop: crop the central crop_pct, resize to "
                              "size (TF-slim); whole_image: resize the whole image to size "
                              "(retrain.py)")
    convert.add_argument("--crop-pct", type=_bounded(float, 0.0, 1.0, low_open=True))
    convert.add_argument("--input-size", type=_bounded(int, 1, 8192), default=None,
                         help="the input side preprocessing resizes to (default: a Keras "
                              "model's or a .tflite file's input size, a graph's resize op, "
                              "else 224)")
    convert.add_argument("--bn-eps", type=_bounded(float, 0.0, 1.0, low_open=True),
                         default=None,
                         help="batch-norm epsilon (default: the graph's for tf-slim, else "
                              "1e-5)")
    convert.add_argument("--head", choices=_head_names(), default=None,
                         help="for a TensorFlow graph with a retrain.py head: retrained (its "
                              "classes, the default when it has one) or imagenet (the 1001 "
                              "ImageNet logits under it)")
    convert.add_argument("--labels", default="auto",
                         help="FILE (one label per line, e.g. retrain.py's "
                              "retrained_labels.txt), 'imagenet', or 'none' (default: "
                              "imagenet for 1000 classes, background + imagenet for 1001; "
                              "none for a retrained head)")
    convert.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                         help="compare the written file with PyTorch, or with LiteRT for a "
                              ".tflite (default: on when torch / ai-edge-litert is installed)")
    convert.add_argument("--tolerance", type=_bounded(float, 0.0, 1.0, low_open=True),
                         default=1e-4,
                         help="self-check tolerance, relative to max(1, max |logit|)")
    convert.add_argument("--force", action="store_true", help="overwrite an existing output")
    convert.set_defaults(handler=run_convert)

    export = commands.add_parser("export", parents=[common],
                                 help="write a mobinumba .h5 file (float32 or int8) as a "
                                      "TensorFlow Lite model")
    export.add_argument("--tflite", action="store_true", required=True,
                        help="the format to write (the only one so far)")
    export.add_argument("weights", help="a mobinumba .h5 file")
    export.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    export.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                        help="run the written file with LiteRT and compare (default: on when "
                             "ai-edge-litert is installed)")
    export.add_argument("--tolerance", type=_bounded(float, 0.0, 1.0, low_open=True),
                        default=1e-4,
                        help="self-check tolerance, relative to max(1, max |logit|)")
    export.add_argument("--force", action="store_true", help="overwrite an existing output")
    export.set_defaults(handler=run_export)

    predict = commands.add_parser("predict", parents=[common],
                                  help="classify images and print the top-k classes, or "
                                       "stream them into a results file (--out)")
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="image files, directories (searched recursively for image "
                              "files) or glob patterns ('photos/**/*.jpg')")
    predict.add_argument("--weights", default=None,
                         help="a mobinumba .h5 file (default: the shipped ImageNet "
                              "MobileNetV1)")
    predict.add_argument("--precision", choices=PRECISIONS, default=None,
                         help="float32 or int8: without --weights, the shipped model or its "
                              "int8 variant; with --weights, the precision the file must have")
    predict.add_argument("--topk", type=_bounded(int, 1, 10 ** 6), default=5)
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.add_argument("--batch-size", type=_bounded(int, 1, MAX_BATCH_SIZE),
                         default=PREDICT_BATCH,
                         help=f"images per forward pass (default {PREDICT_BATCH})")
    stream = predict.add_argument_group("results file (streaming)")
    stream.add_argument("--out", default=None, metavar="FILE",
                        help="write one row per image to FILE (.csv, .jsonl, or .parquet "
                             "with pyarrow) instead of printing, with a progress bar")
    _add_stream_options(stream, needs="; needs --out")
    predict.set_defaults(handler=run_predict)

    embed = commands.add_parser("embed", parents=[common],
                                help="stream each image's pooled features (the classifier's "
                                     "input) into a .parquet or .npy file")
    embed.add_argument("images", nargs="+", metavar="IMAGE",
                       help="image files, directories (searched recursively for image files) "
                            "or glob patterns ('photos/**/*.jpg')")
    embed.add_argument("--out", required=True, metavar="FILE",
                       help="FILE.parquet (columns path, embedding, error; needs pyarrow) or "
                            "FILE.npy, an (N, C) float32 array (NaN rows for unreadable "
                            "images) with FILE.paths.jsonl listing each row's path and error")
    embed.add_argument("--weights", default=None,
                       help="a mobinumba .h5 file (default: the shipped ImageNet MobileNetV1)")
    embed.add_argument("--batch-size", type=_bounded(int, 1, MAX_BATCH_SIZE),
                       default=PREDICT_BATCH,
                       help=f"images per forward pass (default {PREDICT_BATCH})")
    embed.add_argument("--l2-normalize", action="store_true",
                       help="scale each embedding to unit length (an all-zero one stays zero)")
    _add_stream_options(embed)
    embed.set_defaults(handler=run_embed)

    quantize = commands.add_parser("quantize", parents=[common],
                                   help="make an int8 model (TFLite's int8 scheme) from a "
                                        "float32 mobinumba .h5 file")
    quantize.add_argument("weights", help="a float32 mobinumba .h5 file")
    quantize.add_argument("-o", "--output", required=True, help="the int8 .h5 file to write")
    quantize.add_argument("--calibrate", nargs="+", default=None, metavar="DIR_OR_GLOB",
                          help="calibration images (files, directories, glob patterns): "
                               "activation ranges from them, and the top-1 agreement with the "
                               "float model on them (default: none; ReLU6 networks use [0, 6])")
    quantize.add_argument("--percentile", type=_bounded(float, 50.0, 100.0, low_open=True),
                          default=None,
                          help="activation ranges from this percentile of each image's values "
                               "(e.g. 99.99) instead of min/max")
    quantize.add_argument("--force", action="store_true", help="overwrite an existing output")
    quantize.set_defaults(handler=run_quantize)

    inspect = commands.add_parser("inspect", parents=[common],
                                  help="print a weight file's metadata and layer table")
    inspect.add_argument("weights", nargs="?", default=None,
                         help="a mobinumba .h5 file (default: the shipped model)")
    inspect.add_argument("--input-size", type=_bounded(int, 1, 8192), default=None,
                         help="count for this input size (default: the file's)")
    inspect.set_defaults(handler=run_inspect)

    bench = commands.add_parser("bench", parents=[common],
                                help="benchmark report: paper tables, per-layer profile, "
                                     "latency, peers")
    bench.add_argument("--weights", default=None,
                       help="a mobinumba .h5 file (default: random weights at --width)")
    bench.add_argument("--width", type=_bounded(float, 0.0, 4.0, low_open=True), default=None,
                       help="width multiplier of the random-weight model (default 1.0)")
    bench.add_argument("--size", type=_bounded(int, 1, 1024), default=None,
                       help="input height and width (default: the model's input size, 224)")
    bench.add_argument("--batch", type=_bounded(int, 1, 1024), default=1,
                       help="batch size for latency, profile and peers (default 1)")
    bench.add_argument("--runs", type=_bounded(int, 1, 100000), default=None,
                       help="timed runs for latency, profile and peers (default 100)")
    bench.add_argument("--warmup", type=_bounded(int, 0, 10000), default=None,
                       help="untimed runs before timing (default 10)")
    bench.add_argument("--peers", type=_peer_list, default=_peer_list("all"),
                       help="comma-separated peers to compare: torch, onnxruntime, litert, "
                            "all or none (default all)")
    bench.add_argument("--out", default="bench-report",
                       help="directory for report.md, report.json and report.png "
                            "(default bench-report)")
    bench.add_argument("--precision", choices=PRECISIONS, default="float32",
                       help="int8: the int8 model beside its float32 source (default: the "
                            "shipped models; a float32 --weights file is quantized without "
                            "calibration), written to OUT/int8.md and int8.json")
    bench.add_argument("--quick", action="store_true",
                       help="a tiny configuration (width 0.25, 64x64, 10 runs) for testing")
    bench.set_defaults(handler=run_bench)
    return parser


def _add_stream_options(command, needs=""):
    """The options of a run into a results file (predict --out, embed): --resume, --force,
    --decode-threads, the Dask ones; `needs` ends the Dask options' help."""
    command.add_argument("--resume", action="store_true",
                         help="continue FILE: skip images already in it")
    command.add_argument("--force", action="store_true", help="replace an existing FILE")
    command.add_argument("--decode-threads", type=_bounded(int, 0, MAX_DECODE_WORKERS),
                         default=None,
                         help="threads decoding images beside the model, on this machine "
                              "(default: a third of the cores, at least 1; the kernels get the "
                              "other cores unless --threads says otherwise; 0: decode between "
                              "forward passes)")
    cluster = command.add_mutually_exclusive_group()
    cluster.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                         help=f"run on this Dask cluster (tcp://host:8786){needs}")
    cluster.add_argument("--dask-local", type=_bounded(int, 1, 1024), default=None,
                         metavar="N",
                         help=f"run on a local Dask cluster of N worker processes{needs}")
    command.add_argument("--partition-size", type=_bounded(int, 1, MAX_PARTITION_SIZE),
                         default=None,
                         help=f"images per Dask task (default {DEFAULT_PARTITION_SIZE})")


def _peer_list(text):
    """argparse type of --peers: 'all', 'none' or a comma-separated subset of the peers."""
    from .bench.peers import PEERS

    if text == "all":
        return PEERS
    if text == "none":
        return ()
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in PEERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected all, none or a comma-separated "
                                         f"list of {', '.join(PEERS)}")
    return names


def _layout_names():
    from .convert import LAYOUTS
    return tuple(LAYOUTS)


def _head_names():
    from .convert.retrained import HEADS
    return HEADS


def run_convert(args):
    """`mobinumba convert`: write the .h5 and report the self-check."""
    from .convert import convert_checkpoint

    report = convert_checkpoint(
        args.checkpoint, args.output, layout=args.layout, activation=args.activation,
        padding=args.padding, mean=args.mean, std=args.std, interpolation=args.interpolation,
        crop_pct=args.crop_pct, resize=args.resize, input_size=args.input_size,
        bn_eps=args.bn_eps, activation_slope=args.activation_slope, head=args.head,
        labels=args.labels, check=args.check, tolerance=args.tolerance, force=args.force)
    classes = (f"{report.num_classes} classes" if report.num_classes
               else "no classifier (a backbone)")
    print(f"wrote {report.output}: {report.layout} layout, width {report.width_multiplier:g}, "
          f"{classes}, {report.num_layers} weight layers"
          f"{' (with head conv)' if report.head_conv else ''}, {report.activation}, "
          f"padding {report.padding}, bn eps {report.bn_eps:g}")
    if report.head is not None:
        print(f"head: {report.head}")
    if report.ignored:
        shown = ", ".join(report.ignored[:3]) + (", ..." if len(report.ignored) > 3 else "")
        what = ("constant(s) outside the MobileNetV1 scope" if report.layout == "tf-slim"
                else "key(s) outside the MobileNetV1 backbone")
        print(f"ignored {len(report.ignored)} {what}: {shown}")
    if report.check_difference is None:
        reason = ("--no-check" if args.check is False else
                  "neither ai-edge-litert nor torch is installed"
                  if report.layout == "tflite" else "torch is not installed")
        print(f"self-check skipped ({reason})")
    else:
        print(f"self-check against {report.check_reference}: max |logit difference| "
              f"{report.check_difference:.3g} (allowed {report.check_allowed:.3g})")
    return 0


def run_export(args):
    """`mobinumba export --tflite`: write the .tflite and report the self-check."""
    from .export_tflite import export_tflite

    checked = export_tflite(args.weights, args.output, check=args.check,
                            tolerance=args.tolerance, force=args.force)
    from .weights import read_model_file

    precision = read_model_file(args.weights).info.precision
    print(f"wrote {args.output}: {precision} TensorFlow Lite model")
    if checked is None:
        reason = "--no-check" if args.check is False else "ai-edge-litert is not installed"
        print(f"self-check skipped ({reason})")
    else:
        print(f"self-check against LiteRT: max |logit difference| {checked[0]:.3g} (allowed "
              f"{checked[1]:.3g})")
    return 0


def run_quantize(args):
    """`mobinumba quantize`: calibrate, quantize, write atomically, report the agreement."""
    from .inputs import expand_inputs
    from .model import Model
    from .quantize import quantize_model_file
    from .weights import read_model_file, write_model_file

    if os.path.exists(args.output) and not args.force:  # before minutes of calibration
        raise InputError(f"{args.output} exists; use --force to replace it")
    model_file = read_model_file(args.weights)
    batches = None
    if args.calibrate is not None:
        paths = expand_inputs(args.calibrate)
        model = Model(model_file)
        images = [model.preprocess(path) for path in paths]  # InputError names a bad one
        batches = [np.stack(images[i:i + PREDICT_BATCH])
                   for i in range(0, len(images), PREDICT_BATCH)]
    int8_file, report = quantize_model_file(model_file, batches, args.percentile)
    # Read back before it is moved into place: the file written is one the reader accepts.
    write_model_file(args.output, int8_file, overwrite=args.force, verify=read_model_file)
    print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes): int8, "
          f"calibration {report.calibration}")
    if report.agreement is not None:
        print(f"top-1 agreement with the float32 model on the calibration images: "
              f"{report.agreement:.1%} ({round(report.agreement * report.images)} of "
              f"{report.images})")
    return 0


def run_predict(args):
    """`mobinumba predict`: top-k per image, printed or into --out FILE; carries on past
    unreadable images.

    Each bad image gets one error line on stderr (and an {"path", "error"} entry in --json
    output, or a row with an error in FILE, in input order); the exit status is 1 when any
    image failed. Both ways go through stream.predict_files.
    """
    from .inputs import expand_inputs
    from .model import load

    images = expand_inputs(args.images)
    if args.out is None:
        _check_stdout_options(args)
    else:
        from .batch import check_file_options
        check_file_options(args.out, args.resume, args.force, args.decode_threads,
                           args.dask_scheduler, args.dask_local, args.partition_size)
    model = load(args.weights, precision=args.precision)
    model.require_classifier()
    if args.topk > model.num_classes:  # worded for the command line; the library says topk
        raise InputError(f"--topk {args.topk} exceeds the model's {model.num_classes} classes")
    if args.out is not None:
        from .batch import predict_to_file
        return predict_to_file(images, args.out, model, topk=args.topk,
                               batch_size=args.batch_size, resume=args.resume, force=args.force,
                               threads=args.threads, decode_threads=args.decode_threads,
                               dask_scheduler=args.dask_scheduler, dask_local=args.dask_local,
                               partition_size=args.partition_size)
    return _print_results(images, model, args.topk, args.batch_size, args.json)


def run_embed(args):
    """`mobinumba embed`: pooled features per image into --out FILE, streamed like predict
    --out (input order, resume, error rows, Dask); exit status 1 when any image failed."""
    from .batch import check_file_options, embed_to_file
    from .inputs import expand_inputs
    from .model import load
    from .results import EMBEDDING_FORMATS

    images = expand_inputs(args.images)
    check_file_options(args.out, args.resume, args.force, args.decode_threads,
                       args.dask_scheduler, args.dask_local, args.partition_size,
                       EMBEDDING_FORMATS)
    model = load(args.weights)
    return embed_to_file(images, args.out, model, batch_size=args.batch_size,
                         l2_normalize=args.l2_normalize, resume=args.resume, force=args.force,
                         threads=args.threads, decode_threads=args.decode_threads,
                         dask_scheduler=args.dask_scheduler, dask_local=args.dask_local,
                         partition_size=args.partition_size)


def _print_results(images, model, topk, batch_size, as_json):
    """Print each image's predictions (or, with as_json, one JSON list at the end); returns
    the exit status.

    Decoding runs inline (workers=0) with every kernel thread, as before predict_files served
    this path: printing is for a few images at a prompt, where a decode thread has no next
    image to overlap with and would only take a core from the forward pass.
    """
    from .stream import predict_files

    failures = 0
    entries = []  # in input order, errors included
    for result in predict_files(images, batch_size, topk, weights=model, workers=0):
        if result.error is not None:
            failures += 1
            print(f"mobinumba: error: {result.error}", file=sys.stderr)
            entries.append({"path": result.path, "error": result.error})
            continue
        entries.append({"path": result.path,
                        "predictions": [p._asdict() for p in result.predictions]})
        if not as_json:
            _print_predictions(result.path, result.predictions)
    if as_json:
        print(json.dumps(entries, indent=2))
    return EXIT_ERROR if failures else 0


def _check_stdout_options(args):
    """Refuse the options that only make sense with a results file."""
    for option, value in (("--resume", args.resume), ("--force", args.force),
                          ("--decode-threads", args.decode_threads is not None),
                          ("--dask-scheduler", args.dask_scheduler),
                          ("--dask-local", args.dask_local),
                          ("--partition-size", args.partition_size)):
        if value:
            raise InputError(f"{option} needs --out FILE")


def _print_predictions(path, predictions):
    print(path)
    for rank, prediction in enumerate(predictions, start=1):
        print(f"  {rank}. {prediction.probability:7.4f}  {prediction.label} "
              f"({prediction.index})")


def run_inspect(args):
    """`mobinumba inspect`: metadata, then the layer table with totals."""
    from .model import load

    model = load(args.weights)
    info = model.info
    labels = model.labels
    label_text = (f"{len(labels)} ({', '.join(labels[:3])}, ...)" if labels else "none")
    print(f"file:           {model.path}")
    print(f"format:         mobinumba v{info.format_version}, {info.arch}"
          f"{', int8' if info.precision == 'int8' else ''}")
    print(f"width:          {info.width_multiplier:g}")
    print(f"classes:        {info.num_classes}" if info.has_classifier else
          "classes:        0 (no classifier: a backbone giving pooled features)")
    print(f"labels:         {label_text}")
    print(f"activation:     {info.activation_function}")
    print(f"padding:        {info.padding}")
    print(f"preprocessing:  input {info.input_size}, {info.resize} (crop_pct "
          f"{info.crop_pct:g}), {info.interpolation}, mean {_fmt(info.mean)}, "
          f"std {_fmt(info.std)}")
    print(f"source:         {info.source_file} ({info.source_layout} layout, sha256 "
          f"{info.source_sha256[:16]}...), converter {info.converter_version}")
    print()
    print(model.summary(args.input_size))
    return 0


def run_bench(args):
    """`mobinumba bench`: run the benchmark report and say where it went."""
    from .bench.runner import make_config, run_benchmarks

    if args.precision == "int8":
        return _run_int8_bench(args)
    config = make_config(weights=args.weights, width=args.width, size=args.size,
                         batch=args.batch, threads=args.threads, runs=args.runs,
                         warmup=args.warmup, peers=args.peers, out=args.out, quick=args.quick,
                         command="mobinumba " + shlex.join(args.argv))
    report = run_benchmarks(config)
    head = report["headline"]
    for engine in head["engines"]:
        print(f"{engine['label']:<22} p50 {engine['p50_ms']:8.3f} ms  "
              f"mobinumba / engine {engine['mobinumba_over_peer']:.2f}")
    for label in head["skipped"]:
        print(f"{label:<22} skipped (see the report)")
    print(f"depthwise-separable speedup, whole network: {head['separable_speedup_im2col']:.2f}x"
          f" measured (vs im2col), {head['separable_speedup_theoretical']:.2f}x theoretical")
    print("wrote " + ", ".join(f"{args.out}/{name}" for name in report["files"].values()))
    return 0


def _run_int8_bench(args):
    """`mobinumba bench --precision int8`: int8 beside float32 (bench/int8.py)."""
    from .bench.int8 import run_int8_benchmarks
    from .threads import get_threads

    if args.width is not None or args.quick or args.size is not None:
        raise InputError("--precision int8 measures the shipped models or --weights at their "
                         "own width and size: --width, --size and --quick do not apply")
    report = run_int8_benchmarks(args.weights, args.batch, args.threads or get_threads(),
                                 args.runs or 100, 10 if args.warmup is None else args.warmup,
                                 args.out)
    for name, stats in report["latency_ms"].items():
        print(f"mobinumba {name:<8} p50 {stats['p50_ms']:8.3f} ms  batch 8 "
              f"{report['batch8_images_per_s'][name]:7.0f} images/s")
    print(f"wrote {args.out}/int8.md, {args.out}/int8.json")
    return 0


def _fmt(values):
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


if __name__ == "__main__":
    sys.exit(main())
