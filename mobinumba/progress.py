"""Progress of a long run on stderr: a tqdm bar, or plain lines without tqdm.

Two runs use it: `predict --out` counts images (update(), with images/s), `mobinumba bench`
goes through named steps (step(), tick()). tqdm comes with the `[stream]` extra; without it
counted work prints a line `N/TOTAL images, X images/s` at most every PLAIN_INTERVAL seconds
and at the end, and each step prints `DESCRIPTION [I/TOTAL] LABEL` as it starts.
"""
import sys
import time

PLAIN_INTERVAL = 10.0


class Progress:
    """`total` units of work (images, or steps) on stderr; use as a context manager."""

    def __init__(self, total, description="mobinumba predict", unit="img"):
        self.total = total
        self.done = 0
        self.description = description
        self._label = None  # the running step's label (step mode)
        self._start = time.perf_counter()
        self._last_line = self._start
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
        else:
            self._bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr,
                             dynamic_ncols=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            if self._label is not None:  # steps: the bar ends full
                self._bar.update(self.total - self._bar.n)
            self._bar.close()
        elif self.done and self._label is None:
            self._print_line()

    def update(self, count):
        """Record `count` more units done."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif time.perf_counter() - self._last_line >= PLAIN_INTERVAL:
            self._print_line()

    def step(self, label):
        """Start the step called `label`, completing the previous one."""
        if self._bar is not None:
            self._bar.update(self.done - self._bar.n)
            self._bar.set_description_str(f"{self.description}: {label}")
        else:
            print(f"{self.description} [{self.done + 1}/{self.total}] {label}", file=sys.stderr)
        self.done += 1
        self._label = label

    def tick(self, detail):
        """Show where a long step is (e.g. "block 3/13") without counting a step."""
        if self._bar is not None:
            self._bar.set_description_str(f"{self.description}: {self._label}, {detail}")

    def write(self, line):
        """Print a line on stderr without breaking the bar."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def rate(self):
        """Units done per second since the start."""
        elapsed = time.perf_counter() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def _print_line(self):
        self._last_line = time.perf_counter()
        print(f"{self.description}: {self.done}/{self.total} images, {self.rate():.1f} images/s",
              file=sys.stderr)
