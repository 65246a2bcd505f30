"""Run directories: every stage writes into a temporary sibling directory and renames it into place at
the end, so a killed run never leaves an output directory that looks complete. Each run directory has a
``manifest.json`` (resolved config, seed, package versions, data checksums, ...)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from smfa.errors import OutputError

MANIFEST = "manifest.json"
_VERSIONED = ("smfa", "torch", "transformers", "peft", "accelerate", "datasets", "numpy", "pillow")


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj != obj:  # NaN is not valid JSON
        return None
    return obj


def _write_atomic(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write through ``write(fh)`` into a temporary file beside ``path``, then rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically."""

    def write(fh: Any) -> None:
        json.dump(_jsonable(data), fh, indent=2, sort_keys=False)
        fh.write("\n")

    _write_atomic(path, write)


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write one JSON object per line to ``path`` atomically."""
    _write_atomic(path, lambda fh: fh.writelines(json.dumps(_jsonable(r), ensure_ascii=False) + "\n" for r in rows))


def write_text_atomic(path: Path, text: str) -> None:
    _write_atomic(path, lambda fh: fh.write(text))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _write_atomic(path, lambda fh: fh.write(data), binary=True)


def check_output_dir(out: Path, overwrite: bool) -> Path:
    """Refuse an existing output directory unless ``overwrite``; check the parent is writable."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not overwrite:
        raise OutputError(f"output directory {out} already exists; pass --overwrite to replace it, or choose another --out")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the parent of the output directory {out}: {exc.strerror}; choose a writable --out") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {out} is not writable (no write permission on {parent}); choose a writable --out")
    return out


@contextlib.contextmanager
def atomic_run_dir(out: Path, overwrite: bool = False, discard: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; on success rename it to ``out``.

    On an exception the temporary directory is removed and ``out`` is untouched. With ``discard`` (a
    distributed rank other than 0, which does the work but must not write) it is removed in any case.
    """
    out = check_output_dir(out, overwrite)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if discard:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if out.exists():
        # Move the old directory aside first so there is never a moment with no complete output.
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def file_digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(run_dir: Path, stage: str, config: Any, **extra: Any) -> dict[str, Any]:
    """Write ``manifest.json``: stage, resolved config, versions, command line, time, plus ``extra``."""
    manifest = {
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "config": _jsonable(config),
        "versions": package_versions(),
        **{k: _jsonable(v) for k, v in extra.items()},
    }
    write_json_atomic(Path(run_dir) / MANIFEST, manifest)
    return manifest


def read_json(path: Path, fail: Callable[[str], Exception]) -> Any:
    """The JSON document in ``path``; a syntax or encoding error raises ``fail(message)``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise fail(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise fail(f"{path}: not UTF-8 text") from exc


def iter_jsonl(path: Path, fail: Callable[[str], Exception]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line of ``path``; a bad line raises ``fail(message)``."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise fail(f"{path}: line {n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise fail(f"{path}: line {n}: expected a JSON object, found {type(row).__name__}")
            yield n, row


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise OutputError(f"{run_dir} has no {MANIFEST}: it is not a finished smfa run directory")
    return read_json(path, lambda msg: OutputError(f"{msg}: the run directory is corrupt; re-run the stage"))
