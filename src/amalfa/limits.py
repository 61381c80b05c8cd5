"""The ranges of every integer (and fraction) a user hands amalfa, checked before C sees them.

Numbers arrive from the command line (``-k 99999999999999999999``), from the daemon's JSON
(``{"topK": 1e400}`` parses to a float, ``{"topK": 10**30}`` to an int) and from the Python API.
C takes them as ``Py_ssize_t`` or ``int``; a value that does not fit raises OverflowError deep in
a kernel, with a message about C types instead of the argument. So each kind of number has one
:class:`IntRange` here, and every entry point checks against it at its door:

* the Python API calls ``RANGE.check(value, "limit")``: TypeError for what is not an integer
  (``bool`` included), :class:`~amalfa.errors.OutOfRangeError` (a ValueError) with the range in
  the message otherwise;
* the command line uses ``RANGE.argparse()`` as an argparse ``type=``, so a bad value is a usage
  error (exit 2) at parse time, with the range in the message;
* the daemon calls ``RANGE.check`` and answers 400 with the message.

Ranges are wide: they refuse what cannot mean anything (a negative count, a port above 65535),
not what is merely large. ``RESULTS`` stops at 2**31 - 1, far above any table's row count, so a
"give me everything" limit still works; the kernels size their output by the rows they find.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amalfa.errors import OutOfRangeError

__all__ = [
    "BATCH_SIZE",
    "DEBOUNCE_MS",
    "DEPTH",
    "INT32_MAX",
    "JSON_SAFE",
    "PORT",
    "RESULTS",
    "THREADS",
    "available_cores",
    "IntRange",
    "check_fraction",
]

INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class IntRange:
    """Integers from ``low`` to ``high`` inclusive; ``unit`` names what they count (for help)."""

    low: int
    high: int
    unit: str = ""

    def __str__(self) -> str:
        return f"{self.low}..{self.high}"

    def _refuse(self, value: int, what: str) -> OutOfRangeError:
        side = f"at least {self.low}" if value < self.low else f"at most {self.high}"
        shown = str(value) if abs(value) < 10**30 else f"a {len(str(abs(value)))}-digit number"
        subject = f"{what} must" if what else "must"
        return OutOfRangeError(f"{subject} be {side} (range {self}), got {shown}")

    def check(self, value: Any, what: str) -> int:
        """``value`` as an int when it is an integer in range; TypeError / OutOfRangeError."""
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"{what} must be an integer in {self}, not {type(value).__name__}")
        number = value.__index__()  # numpy integers too
        if not self.low <= number <= self.high:
            raise self._refuse(number, what)
        return int(number)

    def parse(self, text: str, what: str = "") -> int:
        """An integer written in ``text`` (decimal, underscores allowed), range-checked.

        ``what`` starts the message (``"--limit must be ..."``); leave it empty where the
        caller names the input itself, as argparse does (``argument -k/--limit: must be ...``).
        """
        try:
            number = int(text.strip())
        except (ValueError, TypeError):
            subject = f"{what} must" if what else "must"
            raise OutOfRangeError(f"{subject} be a whole number in {self}, got "
                                  f"{text!r}") from None
        return self.check(number, what)

    def argparse(self) -> Callable[[str], int]:
        """An argparse ``type=``: a bad value is a usage error (exit 2) that states the range."""

        def whole_number(text: str) -> int:
            try:
                return self.parse(text)
            except OutOfRangeError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        return whole_number


#: How many results a search, listing or graph query returns (k, limit, topK, node limits).
RESULTS = IntRange(1, INT32_MAX, "results")
#: Hops in a graph walk. 0 is the start node alone; walks stop far earlier on real graphs.
DEPTH = IntRange(0, 1000, "hops")
#: A TCP port on 127.0.0.1; 0 asks the kernel for a free one.
PORT = IntRange(0, 65535, "port")
#: Items embedded or written per batch or transaction.
BATCH_SIZE = IntRange(1, 1_000_000, "items")
#: Threads for onnxruntime or the kernels.
THREADS = IntRange(1, 1024, "threads")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count): the
    default thread count of the model sessions and the snapshot reader."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


#: How long a watcher groups file changes, in milliseconds: at most a day.
DEBOUNCE_MS = IntRange(0, 86_400_000, "ms")
#: Integers in the settings file: JSON's safe integers (2**53 - 1), which the TypeScript tools
#: that share the file read exactly too.
JSON_SAFE = IntRange(0, 2**53 - 1)


def check_fraction(value: Any, what: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """A real number in ``[low, high]`` (a score threshold); TypeError / OutOfRangeError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(
            value, "__float__"):
        raise TypeError(f"{what} must be a number in [{low:g}, {high:g}], not "
                        f"{type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number) or not low <= number <= high:
        raise OutOfRangeError(f"{what} must be a number in [{low:g}, {high:g}], got {number!r}")
    return number
