"""Top functions by self and total time from a py-spy ``--format raw`` profile.

    .venv/bin/python benchmarks/profile_summary.py benchmarks/results/profile-20ms.raw [--top 15]

py-spy's raw format is one collapsed stack per line (``frame;frame;... count``),
each frame ``function (file:line)``.  Frames are grouped by function (file and
name, lines merged); "self" is time with the function on top of the stack,
"total" time with it anywhere on it.  Percentages are of the samples taken
while the service was running Python (py-spy skips idle by default).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^():]*?)(?::\d+)?\)$")


def function_of(frame: str) -> str:
    """``name (file:line)`` as ``file:name``, with site-packages paths shortened."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip() or "<unknown>"
    path = match["file"].split("site-packages/")[-1]
    return f"{path}:{match['name']}"


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, self counts, total counts) by function."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = [function_of(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    return samples, own, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    samples, own, total = summarise(args.profile)
    if not samples:
        sys.exit(f"{args.profile}: no samples")
    print(f"{samples} samples")
    print(f"{'self %':>7} {'total %':>8}  function")
    for name, count in own.most_common(args.top):
        print(f"{100 * count / samples:7.1f} {100 * total[name] / samples:8.1f}  {name}")


if __name__ == "__main__":
    main()
