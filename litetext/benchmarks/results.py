"""Result files: one JSON object holding a list of records, and the merge of several (from several devices)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from litetext.errors import LitetextError

FORMAT = "litetext-bench"
FORMAT_VERSION = 1


def write_results(records: list[dict[str, Any]], path: str | Path, command: str | None = None,
                  sources: list[str] | None = None) -> Path:
    from litetext.files import write_json_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "units": {"latency_ms": "milliseconds per batch", "memory_mb": "MiB (2^20 bytes)"},
    }
    if command:
        data["command"] = command
    if sources:
        data["merged_from"] = sources
    data["records"] = records
    write_json_atomic(path, data)
    return path


def read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise LitetextError(f"result file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LitetextError(f"{path} is not a JSON result file: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("records"), list):
        raise LitetextError(f"{path} is not a litetext bench result file (no \"format\": \"{FORMAT}\" with records)")
    return data["records"]


def merge_records(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join record lists in order, dropping records identical to an earlier one (each keeps its device)."""
    seen: set[str] = set()
    out = []
    for records in groups:
        for record in records:
            key = json.dumps(record, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(record)
    return out


def merge_files(paths: list[str | Path]) -> list[dict[str, Any]]:
    return merge_records(*(read_records(p) for p in paths))
