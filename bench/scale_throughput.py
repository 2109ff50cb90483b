"""Images/s of a folder-to-results run, decoding included: one process vs a Dask LocalCluster.

    python bench/scale_throughput.py [--images 512] [--batch 16] [--partition 32] [--rounds 3]

Writes --images synthetic 500x375 JPEG photos (about ImageNet's typical size: smooth colour
fields with sensor-like noise) to a temporary directory and classifies them with the shipped
model (MobileNetV1 1.0, 224x224, TF-slim preprocessing), timing:
- one process, decoding between forward passes, with the seconds spent decoding
  (Model.preprocess) and in forward passes (Model.__call__) timed apart: the decoding share;
- one process through predict_files with decoding threads beside the model: all cores for the
  kernels with 1 and 2 decoding threads (more threads than cores while both run), and one
  core fewer for the kernels with 1 decoding thread (never more threads than cores);
- LocalCluster with 1 and 2 worker processes as `predict --dask-local N` starts them (one
  task thread per worker, kernels with cores / N threads: never more threads than cores),
  through mobinumba.dask.iter_results.
Every configuration runs once untimed (JIT compile, model load, worker start and model
shipping excluded), then --rounds times, configurations alternating round by round; the table
gives the median images/s and the spread. docs/scale.md quotes this script's output.
"""
import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from distributed import Client
from PIL import Image

import mobinumba
from mobinumba.batch import local_cluster
from mobinumba.dask import iter_results, register_model
from mobinumba.model import PREDICT_BATCH
from mobinumba.threads import available_cores


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=PREDICT_BATCH)
    parser.add_argument("--partition", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    load_start = os.getloadavg()
    started = datetime.datetime.now().astimezone()
    with tempfile.TemporaryDirectory() as directory:
        paths = write_photos(directory, args.images)
        model = mobinumba.load()
        cores = available_cores()
        configs = {
            f"1 process: {counted(cores, 'kernel thread')}, decoding between batches":
                lambda: sequential(model, paths, args.batch, cores),
        }
        for kernel, decode in ((cores, 1), (cores, 2), (max(1, cores - 1), 1)):
            configs[f"1 process: {counted(kernel, 'kernel thread')} + "
                    f"{counted(decode, 'decoding thread')}"] = \
                lambda kernel=kernel, decode=decode: pipelined(model, paths, args.batch,
                                                               kernel, decode)
        clusters = []
        for workers in (1, 2):
            cluster = local_cluster(workers)  # what `predict --dask-local N` starts
            client = Client(cluster)
            plugin = register_model(client)  # ships and loads the model, compiles kernels
            clusters.append((client, cluster))
            kernel = client.run(mobinumba.get_threads)
            label = (f"LocalCluster: {counted(workers, 'worker')} x (1 task thread, "
                     f"{counted(min(kernel.values()), 'kernel thread')})")
            configs[label] = (lambda client=client, plugin=plugin:
                              on_dask(client, plugin, paths, args.batch, args.partition))
        try:
            for run in configs.values():  # warm-up
                run()
            rates = {label: [] for label in configs}
            splits = []  # (decoding share, ms decoding per image, ms forward per image)
            for _ in range(args.rounds):
                for label, run in configs.items():
                    seconds, split = run()
                    rates[label].append(len(paths) / seconds)
                    if split is not None:
                        decoding, forward = split
                        splits.append((decoding / seconds, 1e3 * decoding / len(paths),
                                       1e3 * forward / len(paths)))
        finally:
            for client, cluster in clusters:
                client.close()
                cluster.close()
    load_end = os.getloadavg()
    print(f"{args.images} images 500x375 JPEG, batch {args.batch}, Dask partitions of "
          f"{args.partition}, {args.rounds} rounds; {started:%Y-%m-%d %H:%M %Z}; load average "
          f"(1 min) {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end; "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print()
    print("| configuration | images/s (median) | min - max |")
    print("| --- | ---: | ---: |")
    for label, values in rates.items():
        print(f"| {label} | {statistics.median(values):.1f} | {min(values):.1f} - "
              f"{max(values):.1f} |")
    print()
    shares, decode_ms, forward_ms = zip(*splits)
    print(f"one process, decoding between batches: decoding {statistics.median(shares):.0%} "
          f"of the time (median; {min(shares):.0%} - {max(shares):.0%}), "
          f"{statistics.median(decode_ms):.2f} ms per image decoding (1 thread), "
          f"{statistics.median(forward_ms):.2f} ms per image in forward passes "
          f"({counted(available_cores(), 'kernel thread')})")


def counted(number, noun):
    return f"{number} {noun}{'s' * (number != 1)}"


def write_photos(directory, count, seed=0):
    """`count` 500x375 JPEGs (quality 90): smooth random colour fields plus noise."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((500, 375), Image.Resampling.BICUBIC), np.float32)
        pixels = np.clip(field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
        path = os.path.join(directory, f"photo{index:05d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def sequential(model, paths, batch, threads):
    """(seconds, (decoding seconds, forward seconds)): decode a batch, run it, repeat (as
    predict_files workers=0)."""
    mobinumba.set_threads(threads)
    decoding = forward = 0.0
    start = time.perf_counter()
    for first in range(0, len(paths), batch):
        decode_start = time.perf_counter()
        images = np.stack([model.preprocess(path) for path in paths[first:first + batch]])
        forward_start = time.perf_counter()
        model.top_k(model(images), 5)
        decoding += forward_start - decode_start
        forward += time.perf_counter() - forward_start
    return time.perf_counter() - start, (decoding, forward)


def pipelined(model, paths, batch, threads, workers):
    mobinumba.set_threads(threads)
    start = time.perf_counter()
    for result in mobinumba.predict_files(paths, batch, 5, weights=model, workers=workers):
        assert result.error is None, result.error
    return time.perf_counter() - start, None


def on_dask(client, plugin, paths, batch, partition):
    start = time.perf_counter()
    rows = sum(len(part) for part in iter_results(client, paths, plugin, batch_size=batch,
                                                  topk=5, partition_size=partition))
    assert rows == len(paths)
    return time.perf_counter() - start, None


if __name__ == "__main__":
    main()
