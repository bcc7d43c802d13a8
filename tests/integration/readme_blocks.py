"""README.md's fenced code blocks, each with the test marker written above it.

A marker is an HTML comment on the line before a block's opening fence:
``<!-- readme-test: not run: WHY -->`` (never run; the reason is required),
``<!-- readme-test: bounded: WHY -->`` (long-running commands: run for seconds, then stopped)
or ``<!-- readme-test: run -->`` (the default when there is none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "commands", "expected_headers", "read_blocks"]

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!-- readme-test: (not run|bounded|run)(?::\s*(.*?))?\s*-->$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language (``""`` for printed output), text, line and marker."""

    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    mode: str  # run | bounded | not run
    why: str

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.lang or 'output'}"


def read_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = _MARKER.match(lines[i - 1].strip()) if i else None
        mode, why = (marker.group(1), marker.group(2) or "") if marker else ("run", "")
        blocks.append(Block(match.group(1), "\n".join(lines[i + 1 : end]), i + 1, mode, why))
        i = end + 1
    return blocks


def commands(text: str) -> list[str]:
    """The shell commands of a block: continuation lines joined, comment-only lines dropped."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def expected_headers(text: str) -> list[str]:
    """Header names a block shows as its output (``# X-Suanli-Region: wuhan`` lines)."""
    return re.findall(r"^#\s+([A-Za-z][A-Za-z-]+):\s", text, flags=re.MULTILINE)
