"""Whether a command's JSON output holds expected values (an engine step's `expect_json:`).

A status command such as `flwr list --format json` confirms what a process's exit code cannot;
the output is read from the first line that opens a JSON document, and each expected value is
compared as JSON text at a dotted path (list items by index: `runs.0.status`).
"""

from __future__ import annotations

import json

from seel import yamledit


def json_mismatch(lines: list[str], expected: tuple[tuple[str, str], ...]) -> str | None:
    """Why a command's output (JSON, after any lines before it) does not hold the expected values
    at their dotted paths (list items by index), or None if it does."""
    start = next((i for i, ln in enumerate(lines) if ln.lstrip()[:1] in ("{", "[")), None)
    if start is None:
        return "no JSON in the output"
    try:
        doc = json.loads("\n".join(lines[start:]))
    except ValueError as exc:
        return f"output is not JSON: {exc}"
    for path, want in expected:
        if not yamledit.has_path(doc, path):  # the same dotted paths as config keys
            return f"{path} is missing"
        node = yamledit.get_path(doc, path)
        if json.dumps(node) != want:
            return f"{path} is {json.dumps(node)}, expected {want}"
    return None
