"""What every benchmark writes about itself: the machine, and its section of README.md.

Owns the two helpers the benchmarks share: `machine_lines` (date, CPU model from
/proc/cpuinfo, core count, Python) and `write_marked_section`, which replaces the text
between a start and an end marker of benchmarks/README.md and leaves the rest of the file
as it is (other benchmarks own other sections, and the notes outside markers are kept).
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

README = Path(__file__).with_name("README.md")


def cpu_model() -> str:
    """The "model name" of /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def machine_lines() -> list[str]:
    """Markdown bullet lines: date, CPU, cores, Python."""
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return [
        f"- Date: {time.strftime('%Y-%m-%d')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores",
        f"- Python: {python} on {platform.system()} {platform.machine()}",
    ]


def write_marked_section(path: Path, start: str, end: str, body: str, heading: str) -> None:
    """Put `body` between the `start` and `end` markers of `path`.

    When the markers are missing, the section `heading` ("## ...") gets them: its text up
    to the next heading is replaced (so a placeholder such as "Not measured yet." goes),
    or, without that heading, a new section is appended.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start not in text or end not in text:
        text = _insert_markers(text, start, end, heading)
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{body}\n{end}{tail}")


def _insert_markers(text: str, start: str, end: str, heading: str) -> str:
    markers = f"{start}\n{end}\n"
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.rstrip("\n") == heading:
            stop = next(
                (i for i in range(index + 1, len(lines)) if lines[i].startswith("## ")),
                len(lines),
            )
            following = "\n" if stop < len(lines) else ""
            return "".join([*lines[: index + 1], "\n", markers, following, *lines[stop:]])
    return text.rstrip("\n") + f"\n\n{heading}\n\n{markers}"
