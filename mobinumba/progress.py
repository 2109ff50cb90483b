"""Progress of a long predict run on stderr: a tqdm bar with images/s, or plain lines.

tqdm comes with the `[stream]` extra; without it a line `N/TOTAL images, X images/s` is
printed at most every PLAIN_INTERVAL seconds, and at the end.
"""
import sys
import time

PLAIN_INTERVAL = 10.0


class Progress:
    """Counts images done out of `total`; use as a context manager."""

    def __init__(self, total, description="mobinumba predict"):
        self.total = total
        self.done = 0
        self.description = description
        self._start = time.perf_counter()
        self._last_line = self._start
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
        else:
            self._bar = tqdm(total=total, desc=description, unit="img", file=sys.stderr,
                             dynamic_ncols=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
        elif self.done:
            self._print_line()

    def update(self, count):
        """Record `count` more images done."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif time.perf_counter() - self._last_line >= PLAIN_INTERVAL:
            self._print_line()

    def write(self, line):
        """Print a line on stderr without breaking the bar."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def rate(self):
        """Images per second since the start."""
        elapsed = time.perf_counter() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def _print_line(self):
        self._last_line = time.perf_counter()
        print(f"{self.description}: {self.done}/{self.total} images, {self.rate():.1f} images/s",
              file=sys.stderr)
