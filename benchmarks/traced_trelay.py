"""`trelay` under tracemalloc, for finding what grows in a long run (benchmarks only).

Owns the memory-tracing launcher of the soak (`benchmarks.soak --tracemalloc`, issue 15):
`python -m benchmarks.traced_trelay DIR FRAMES trelay-arguments...` starts tracemalloc
with FRAMES frames per trace, then runs `trelay.process.cli.main` with the arguments;
each SIGUSR1 dumps a snapshot to DIR/snapshot-N.bin (N = 0, 1, ...), with the count of
live objects the garbage collector tracks, by type, beside it (snapshot-N.json), which
`diff` (or `tracemalloc.Snapshot.load`) compares afterwards. Only the Python heap is traced: growth
that tracemalloc does not see is the allocator's (arenas, fragmentation) or C libraries'.

This is a benchmark tool, not a production switch: nothing in `trelay` knows of it, and
tracing slows the node (every allocation records its traceback).
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import tracemalloc
from collections import Counter
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType


def main(argv: list[str]) -> int:
    directory, frames, *arguments = argv
    out = Path(directory)
    taken = 0

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal taken
        snapshot = tracemalloc.take_snapshot()
        # Leave tracemalloc's own and the import system's traces out of every diff.
        snapshot = snapshot.filter_traces(
            (
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            )
        )
        path = out / f"snapshot-{taken}.bin"
        gc.collect()
        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        path.with_suffix(".json").write_text(json.dumps(types))
        snapshot.dump(str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").rename(path)  # whole files only: the soak polls for it
        taken += 1

    tracemalloc.start(int(frames))
    signal.signal(signal.SIGUSR1, dump)
    # The `trelay` console script's own entry point (nothing imports trelay.process.cli).
    (trelay,) = entry_points(group="console_scripts", name="trelay")
    status = trelay.load()(arguments)
    return int(status)


def diff(before: Path, after: Path, top: int = 15, key: str = "traceback") -> list[str]:
    """The `top` largest growths from snapshot `before` to `after`, then the largest
    shrinks, one line each: size and count change, then where (the traceback, innermost
    frame first), after the total change of the traced heap."""
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    lines = []
    total = sum(stat.size_diff for stat in new.compare_to(old, "filename"))
    lines.append(f"traced Python heap change: {total / 1024:+.1f} KiB")
    changes = new.compare_to(old, key)
    grown = sorted(changes, key=lambda stat: stat.size_diff, reverse=True)[:top]
    shrunk = sorted(changes, key=lambda stat: stat.size_diff)[: max(1, top // 3)]
    for stat in [*grown, *(stat for stat in shrunk if stat.size_diff < 0)]:
        # Innermost frame first (a tracemalloc Traceback runs from the oldest frame).
        where = " <- ".join(
            f"{Path(frame.filename).name}:{frame.lineno}" for frame in reversed(stat.traceback)
        )
        lines.append(f"{stat.size_diff / 1024:+8.1f} KiB {stat.count_diff:+6d} blocks  {where}")
    old_types = json.loads(before.with_suffix(".json").read_text())
    new_types = json.loads(after.with_suffix(".json").read_text())
    counts = {name: new_types.get(name, 0) - old_types.get(name, 0) for name in new_types}
    more = sorted(counts.items(), key=lambda item: item[1], reverse=True)[:5]
    lines.append(
        "objects the collector tracks, most added: "
        + ", ".join(f"{name} {count:+d}" for name, count in more)
    )
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
