"""The files of a bench directory: their names and the checksum over them. Kept apart from the builder so
the loader learns file names without importing the image renderer."""

from __future__ import annotations

import hashlib
from pathlib import Path

BENCH_JSON = "bench.json"
PEOPLE_JSONL = "people.jsonl"
QUESTIONS_JSONL = "questions.jsonl"
SPLITS_JSON = "splits.json"
NOT_CHECKSUMMED = frozenset({BENCH_JSON, "manifest.json"})


def bench_checksum(root: Path) -> str:
    """sha256 over every file's relative path, size and bytes, in sorted path order (bench.json and
    manifest.json excluded: the first holds the checksum, the second the build time)."""
    root = Path(root)
    h = hashlib.sha256()
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    for rel in files:
        if rel in NOT_CHECKSUMMED:
            continue
        data = (root / rel).read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()
