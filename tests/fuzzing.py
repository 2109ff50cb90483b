"""Shared machinery of the fuzz tests: the isolated worker, outcome checks, statistics.

Every case runs in tests/fuzz_worker.py, a separate process, so a segfault or a hang in
mobinumba (or in h5py, torch, Pillow under it) is reported as a failed case instead of
killing pytest. The number of examples scales with MOBINUMBA_FUZZ_SCALE (default 1) for
longer runs; the defaults keep the whole suite within its time budget.
"""
import contextlib
import json
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_worker.py")
SCALE = float(os.environ.get("MOBINUMBA_FUZZ_SCALE", "1"))
# The warm-up answer includes importing torch and compiling (or loading) every kernel.
START_TIMEOUT = 600.0
# One case takes well under a second; a minute means a hang.
CASE_TIMEOUT = 60.0


def examples(count):
    """Hypothesis settings for `count` examples (times MOBINUMBA_FUZZ_SCALE).

    Derandomized so that CI runs the same cases every time (the failing example is printed
    and reproducible); no example database, no deadline (the worker's timeout is the hang
    detector), no shrinking (a crashing case restarts the worker, seconds per attempt).
    """
    return settings(max_examples=examples_count(count), derandomize=True, database=None,
                    deadline=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))


def examples_count(count):
    """How many cases `examples(count)` runs."""
    return max(1, int(count * SCALE))


# Finite logits from weights whose sums may overflow float32 cannot be compared with the
# reference, and those whose bound exceeds 1e-3 of the logit scale are compared loosely
# (tests/fuzz_worker.py): at most this share of a fuzz test's cases may end either way.
UNCOMPARED_SHARE = 0.02


def assert_few_uncompared(seen, cases):
    """Fail when more than UNCOMPARED_SHARE of the `cases` a watcher saw went uncompared or
    were compared loosely."""
    for target, judged in seen.comparisons.items():
        weak = judged["uncompared"] + judged["loosely compared"]
        assert weak <= UNCOMPARED_SHARE * cases, (target, dict(judged), cases)


def at_least(count):
    """A coverage threshold met by the default number of examples, scaled down with a
    MOBINUMBA_FUZZ_SCALE below 1 (a quick run)."""
    return int(count * min(1.0, SCALE))


class FuzzWorker:
    """A tests/fuzz_worker.py process, restarted after a crash or a hang.

    `warmup` is a request for a valid case, run (with a long timeout: imports and kernel
    compilation) each time the process starts, so that every real case gets the short one.
    """

    def __init__(self, warmup):
        self.warmup = warmup
        self.process = None
        self.stderr = None
        self.answers = None

    def run(self, request):
        """The worker's answer to `request`, or {"outcome": "crash" | "hang", ...}."""
        if self.process is None:
            self._start()
        return self._ask(request, CASE_TIMEOUT)

    def _ask(self, request, timeout):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        try:
            line = self.answers.get(timeout=timeout)
        except queue.Empty:
            self.close()
            return {"outcome": "hang", "detail": f"no answer within {timeout:.0f} s"}
        if line is None:
            returncode = self.process.wait()
            tail = self._stderr_tail()
            self.close()
            return {"outcome": "crash", "detail": f"worker exited with {returncode}: {tail}"}
        return json.loads(line)

    def _start(self):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True, bufsize=1)
        self.answers = queue.Queue()
        threading.Thread(target=self._read, args=(self.process.stdout, self.answers),
                         daemon=True).start()
        answer = self._ask(self.warmup, START_TIMEOUT)
        if answer["outcome"] != "ok":
            raise RuntimeError(f"the fuzz worker failed its warm-up case: {answer}")

    @staticmethod
    def _read(stream, answers):
        for line in stream:
            answers.put(line)
        answers.put(None)

    def _stderr_tail(self):
        self.stderr.seek(0)
        return self.stderr.read()[-2000:]

    def close(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.stderr.close()
        self.process = None


class FuzzStats:
    """Cases run, outcomes and distinct error classes per fuzz target, and time spent."""

    def __init__(self):
        self.cases = Counter()
        self.outcomes = defaultdict(Counter)
        self.classes = defaultdict(Counter)  # target -> message template -> count
        self.details = defaultdict(Counter)  # target -> low-level cause (h5py, Pillow, ...)
        self.seconds = Counter()
        # target -> how "ok" cases were judged: compared, overflow reported, uncompared
        self.comparisons = defaultdict(Counter)
        # target -> comparison -> largest allowed error, largest error found (/ logit scale)
        self.allowed = defaultdict(Counter)
        self.error = defaultdict(Counter)
        self.skipped = Counter()  # target -> edits drawn that could not be made
        self.watchers = []

    @contextlib.contextmanager
    def watching(self):
        """A FuzzStats that also records every case run inside the with-block."""
        watcher = FuzzStats()
        self.watchers.append(watcher)
        try:
            yield watcher
        finally:
            self.watchers.remove(watcher)

    def record(self, target, answer):
        for watcher in self.watchers:
            watcher.record(target, answer)
        self.cases[target] += 1
        self.outcomes[target][answer["outcome"]] += 1
        if "comparison" in answer:
            self.comparisons[target][answer["comparison"]] += 1
        if "allowed" in answer:
            kind = answer["comparison"]
            self.allowed[target][kind] = max(self.allowed[target][kind], answer["allowed"])
            self.error[target][kind] = max(self.error[target][kind], answer["error"])
        if answer["outcome"] == "refused":
            template, detail = message_template(answer["message"])
            self.classes[target][f"{answer['type']}: {template}"] += 1
            if detail:
                self.details[target][detail] += 1

    def skip(self, target, count=1):
        """Record `count` drawn edits that could not be made (the case ran without them)."""
        for watcher in self.watchers:
            watcher.skip(target, count)
        self.skipped[target] += count

    def summary_lines(self):
        lines = []
        for target in sorted(self.cases):
            outcomes = ", ".join(f"{n} {name}" for name, n in self.outcomes[target].most_common())
            lines.append(f"{target}: {self.cases[target]} cases in {self.seconds[target]:.1f} s "
                         f"({outcomes}); {len(self.classes[target])} distinct error messages, "
                         f"{len(self.details[target])} distinct low-level causes")
            if self.comparisons[target]:
                judged = ", ".join(f"{n} {name}"
                                   for name, n in self.comparisons[target].most_common())
                lines.append(f"  ok cases: {judged}")
                for kind in sorted(self.allowed[target]):
                    lines.append(f"  {kind}: largest allowed error "
                                 f"{self.allowed[target][kind]:.2e} of the logit scale, "
                                 f"largest error found {self.error[target][kind]:.2e}")
            if self.skipped[target]:
                lines.append(f"  {self.skipped[target]} drawn edits could not be made")
        return lines

    def as_json(self):
        return {target: {"cases": self.cases[target], "seconds": round(self.seconds[target], 1),
                         "outcomes": dict(self.outcomes[target]),
                         "error_classes": dict(self.classes[target].most_common()),
                         "low_level_causes": dict(self.details[target].most_common()),
                         "comparisons": dict(self.comparisons[target]),
                         "largest_allowed_error": dict(self.allowed[target]),
                         "largest_error": dict(self.error[target]),
                         "edits_not_made": self.skipped[target]}
                for target in self.cases}


STATS = FuzzStats()


def message_template(message):
    """(template, low-level detail) of an error message: the file path, layer keys, quoted
    values and numbers replaced by placeholders; the parenthesised cause reported by h5py,
    torch or Pillow split off as the detail."""
    detail = ""
    cause = re.search(r"(unreadable, the file is corrupt|not a readable HDF5 file|cannot "
                      r"decode image|not a readable PyTorch checkpoint|not a readable "
                      r"safetensors file) \((.*)\)$", message)
    if cause:
        detail = _normalise(cause.group(2))
        message = message[:cause.start(2) - 1] + "(...)"
    text = re.sub(r"^\S+?: ", "", message, count=1)  # the file path
    return _normalise(text), detail


def _normalise(text):
    text = re.sub(r"layers/\d+_\w+", "layers/<layer>", text)
    # Quoted values become '<x>', except the names of attributes, datasets and groups.
    text = re.sub(r"((?:attribute|dataset|group) '[^']*')|'[^']*'|\"[^\"]*\"",
                  lambda match: match.group(1) or "'<x>'", text)
    text = re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "<n>", text)
    return re.sub(r"\b(block<n>_(dw|pw)|conv_stem|classifier|conv_head)\b", "<layer>", text)


class CaseFailure(AssertionError):
    """A fuzz case that crashed, hung, raised a foreign exception or computed a wrong result."""


def check_answer(target, answer, case_path, error_types, naming, failures_dir):
    """Record the answer and raise CaseFailure unless it is a clean refusal or a correct run.

    A refusal must be one of `error_types`, one line, start with the case's path, and the
    rest match the regex `naming` (what it must name: a dataset, an attribute, a key).
    """
    STATS.record(target, answer)
    outcome = answer["outcome"]
    if outcome == "ok":
        return
    problem = None
    if outcome != "refused":
        problem = f"{outcome}: {answer.get('type', '')} {answer.get('message', '')} " \
                  f"{answer.get('detail', '')} {answer.get('traceback', '')}"
    else:
        message = answer["message"]
        if answer["type"] not in error_types:
            problem = f"{answer['type']} is not one of {error_types}: {message}"
        elif "\n" in message:
            problem = f"message has several lines: {message!r}"
        elif not message.startswith(case_path):
            problem = f"message does not start with the file: {message}"
        elif not re.search(naming, message[len(case_path):]):
            problem = f"message does not name what is wrong: {message}"
    if problem is not None:
        os.makedirs(failures_dir, exist_ok=True)
        kept = os.path.join(failures_dir, f"{target}-{STATS.cases[target]}"
                                          f"{os.path.splitext(case_path)[1]}")
        if os.path.exists(case_path):
            shutil.copy(case_path, kept)
        raise CaseFailure(f"{problem} (case kept as {kept})")


class Timer:
    """Adds the wall time of a with-block to STATS.seconds[target]."""

    def __init__(self, target):
        self.target = target

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        STATS.seconds[self.target] += time.perf_counter() - self.start


@st.composite
def structural_byte_edits(draw, size, structure, max_overwrite=12):
    """1-3 edits of a file of `size` bytes: flips and overwrites (up to `max_overwrite`
    bytes), 4 in 5 at an offset from `structure` (the file's non-data bytes); rarely a cut."""
    rnd = random.Random(draw(st.integers(0, 2 ** 64 - 1)))
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        if rnd.random() < 0.8:
            offset = int(structure[rnd.randrange(len(structure))])
        else:
            offset = rnd.randrange(size)
        kind = rnd.choices(["flip", "overwrite", "truncate"], weights=[80, 15, 5])[0]
        if kind == "flip":
            edits.append((kind, offset, 1 << rnd.randrange(8)))
        elif kind == "overwrite":
            edits.append((kind, offset, draw(st.binary(min_size=1, max_size=max_overwrite))))
        else:
            edits.append((kind, offset, None))
    return edits


def apply_byte_edits(data, edits):
    """`data` with the (kind, offset, argument) edits applied in turn: flip (xor a byte with
    argument), overwrite (with the bytes argument), truncate, delete (argument bytes),
    insert (the bytes argument); offsets past the end act on the last byte."""
    data = bytearray(data)
    for kind, offset, argument in edits:
        offset = min(offset, max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[offset] ^= argument
        elif kind == "overwrite":
            data[offset:offset + len(argument)] = argument
        elif kind == "truncate":
            del data[offset:]
        elif kind == "delete":
            del data[offset:offset + argument]
        elif kind == "insert":
            data[offset:offset] = argument
    return bytes(data)
