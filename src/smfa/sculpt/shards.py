"""Rewrite a safetensors checkpoint out of core: shard by shard, tensor by tensor, under the same names.

Nothing here knows about SMFA: :func:`rewrite_shards` applies in-place transforms to the named tensors of
shards and copies every other tensor byte for byte, in one pipeline (a reader thread, transform threads,
a writer thread), so only a few tensors are in memory however large the shards. ``safetensors``' own API
cannot do this: its writer (``save_file``) takes every tensor of a file at once, and its memory map keeps
read pages resident. Headers are parsed here and checked against the file and against ``safe_open``'s own reading.
"""

from __future__ import annotations

import gc
import json
import math
import shutil
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import safe_open

from smfa.errors import ModelError, OutputError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
_ST_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
# The dtypes a transform can be given a tensor of; tensors of other dtypes (integers, fp8) are only copied.
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_COPY_CHUNK = 1 << 24
_READ_AHEAD = 2  # transformed tensors read ahead of the math (bounds memory with the writer's queue)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: dtype, shape and its absolute byte range in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def itemsize(self) -> int:
        return _ST_ITEMSIZE.get(self.dtype, 1)


def read_header(path: Path) -> tuple[dict[str, str] | None, dict[str, TensorEntry]]:
    """Parse a safetensors header (8-byte length + JSON) and check every byte range against the file."""
    bad = f"{path} is not a valid safetensors file"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ModelError(f"{bad} (shorter than 8 bytes); re-download or re-save the checkpoint")
        (length,) = struct.unpack("<Q", raw)
        if length > size - 8:
            raise ModelError(f"{bad} (header length {length} beyond the file's {size} bytes); it is truncated")
        try:
            header = json.loads(fh.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{bad} (unreadable header: {exc}); re-download or re-save the checkpoint") from exc
    metadata = header.pop("__metadata__", None)
    start = 8 + length
    entries = {}
    for name, info in header.items():
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            entry = TensorEntry(name, str(info["dtype"]), tuple(int(x) for x in info["shape"]), start + begin, start + end)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{bad} (tensor {name!r} has a malformed header entry); re-save the checkpoint") from exc
        shape = entry.shape
        if entry.end > size or entry.begin > entry.end or (
            entry.dtype in _ST_ITEMSIZE and entry.end - entry.begin != math.prod(shape) * entry.itemsize
        ):
            raise ModelError(f"{bad} (tensor {name!r} has an inconsistent byte range); the file is truncated or corrupt")
        entries[name] = entry
    with safe_open(str(path), framework="pt") as fh:  # the library's own validation agrees with ours
        if set(fh.keys()) != set(entries):
            raise ModelError(f"{bad} (safetensors lists other tensors than its header); re-save the checkpoint")
    return metadata, entries


def checkpoint_shards(src: Path) -> list[Path]:
    """The safetensors files of a HF model directory: the index's shards, or the single model.safetensors."""
    if not src.is_dir():
        raise ModelError(f"checkpoint directory {src} does not exist")
    index = src / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelError(f"{index} is not a valid safetensors index (no weight_map); re-save the checkpoint") from exc
        shards = [src / name for name in sorted(set(weight_map.values()))]
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise ModelError(f"{index} lists shards missing from {src}: {', '.join(missing[:5])}; the download is incomplete")
        return shards
    if (src / SAFETENSORS_SINGLE).is_file():
        return [src / SAFETENSORS_SINGLE]
    raise ModelError(
        f"{src} has neither {SAFETENSORS_INDEX} nor {SAFETENSORS_SINGLE}; only safetensors checkpoints can be "
        "rewritten (re-save with save_pretrained(safe_serialization=True))"
    )


def check_index(src: Path, headers: Mapping[Path, dict[str, TensorEntry]]) -> dict[str, Path]:
    """Map every tensor name to its shard; the index (if any) must agree with the shards' headers."""
    where: dict[str, Path] = {}
    for shard, entries in headers.items():
        for name in entries:
            if name in where:
                raise ModelError(f"tensor {name!r} is stored in both {where[name].name} and {shard.name}; re-save the checkpoint")
            where[name] = shard
    index = src / SAFETENSORS_INDEX
    if index.is_file():
        for name, shard in json.loads(index.read_text(encoding="utf-8"))["weight_map"].items():
            if where.get(name) != src / shard:
                raise ModelError(f"{index} puts {name!r} in {shard}, but that shard does not hold it; re-save the checkpoint")
    return where


def _layout(metadata: dict[str, str] | None, entries: Iterable[TensorEntry]) -> tuple[bytes, list[TensorEntry]]:
    """Header bytes and tensor order of the rewritten shard: widest dtype first, then by name, as
    safetensors does, so every tensor stays aligned; the header is padded to 8 bytes."""
    order = sorted(entries, key=lambda e: (-e.itemsize, e.name))
    header: dict[str, object] = {"__metadata__": metadata} if metadata is not None else {}
    offset = 0
    for e in order:
        size = e.end - e.begin
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, order


def _read_into(fh, offset: int, buf: memoryview) -> None:
    fh.seek(offset)
    done = 0
    while done < len(buf):
        n = fh.readinto(buf[done:])
        if not n:
            raise ModelError(f"{fh.name} ended early at byte {offset + done}; the file is truncated")
        done += n


class _Buffers:
    """Byte buffers passed from the reader thread to the math to the writer thread, then reused: a fresh
    100 MB allocation costs a page fault and a zeroed page per 4 KiB. Keeps at most a few per size."""

    def __init__(self, keep: int) -> None:
        self._free: dict[int, list[torch.Tensor]] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def take(self, nbytes: int) -> torch.Tensor:
        with self._lock:
            free = self._free.get(nbytes)
            if free:
                return free.pop()
        return torch.empty(nbytes, dtype=torch.uint8)

    def give(self, buf: torch.Tensor) -> None:
        with self._lock:
            free = self._free.setdefault(buf.numel(), [])
            if len(free) < self._keep:
                free.append(buf)


def _read_tensor(src: Path, entry: TensorEntry, buffers: _Buffers) -> torch.Tensor:
    """One tensor's bytes, read into memory of our own (not a memory map: its pages would count against the
    process and stay resident for the whole shard)."""
    raw = buffers.take(entry.end - entry.begin)
    with open(src, "rb") as fh:
        _read_into(fh, entry.begin, memoryview(raw.numpy()))
    return raw


def _write_tensor(dst, raw: torch.Tensor, buffers: _Buffers) -> None:
    dst.write(memoryview(raw.numpy()))
    buffers.give(raw)


def _copy_range(src: Path, dst, begin: int, end: int) -> None:
    """Copy bytes [begin, end) of ``src`` to the current position of ``dst``."""
    chunk = bytearray(min(_COPY_CHUNK, max(end - begin, 1)))
    view = memoryview(chunk)
    with open(src, "rb") as fh:
        pos = begin
        while pos < end:
            n = min(len(chunk), end - pos)
            _read_into(fh, pos, view[:n])
            dst.write(view[:n])
            pos += n


@dataclass(frozen=True)
class ShardRewrite:
    """One shard to rewrite: ``src`` to ``dst`` under the same names, the tensors named in ``transforms``
    changed in place by them (their return value goes to :func:`rewrite_shards`' ``on_done``)."""

    src: Path
    dst: Path
    metadata: dict[str, str] | None
    entries: Mapping[str, TensorEntry]
    transforms: Mapping[str, Callable[[torch.Tensor], object]]


def _write_transformed(dst: BinaryIO, transform: Future, raw: torch.Tensor, buffers: _Buffers) -> None:
    transform.result()  # a failed transform stops the writer here; its error reaches the caller
    _write_tensor(dst, raw, buffers)


def _close_checked(dst: BinaryIO, path: Path, expected: int) -> None:
    dst.close()
    if path.stat().st_size != expected:
        raise OutputError(f"{path} has {path.stat().st_size} bytes, expected {expected}; is the disk full?")


def rewrite_shards(
    jobs: Sequence[ShardRewrite],
    workers: int = 1,
    on_done: Callable[[str, object], None] | None = None,
) -> None:
    """Write each job's ``src`` to its ``dst`` tensor by tensor: tensors in its ``transforms`` (of a dtype
    in :data:`FLOAT_DTYPES`) are read, changed in place and written; the others are copied byte for byte.

    One pipeline over all the shards, so the disk never waits for the math nor the math for the disk: a
    reader thread reads the next transformed tensors ahead (across shard boundaries), ``workers`` threads
    transform different tensors at once, and a writer thread writes every shard in order. At most
    ``_READ_AHEAD + workers + 3`` tensors are in memory, however large the shards. ``on_done(name, result)``
    is called in the caller's thread with each transform's return value, in the order of the output.
    """
    max_writes = workers + 2  # writer tasks queued, each transformed tensor among them (bounds memory)
    buffers = _Buffers(keep=_READ_AHEAD + max_writes + 1)
    plans = [(job, *_layout(job.metadata, job.entries.values())) for job in jobs]
    to_read = deque((job.src, e) for job, _, order in plans for e in order if e.name in job.transforms)
    reads: deque[Future] = deque()
    writes: deque[Future] = deque()
    results: deque[tuple[str, Future]] = deque()
    outputs: list[BinaryIO] = []
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-reader")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
    # Transforms run torch single-threaded in their threads (a new thread would otherwise use every core in
    # MKL and OpenMP calls): the parallelism is across tensors.
    compute = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="shard-transform",
                              initializer=torch.set_num_threads, initargs=(1,))

    def prefetch() -> None:
        while to_read and len(reads) < _READ_AHEAD:
            src, entry = to_read.popleft()
            reads.append(reader.submit(_read_tensor, src, entry, buffers))

    def report(block: bool) -> None:
        while results and (block or results[0][1].done()):
            name, result = results.popleft()
            value = result.result()
            if on_done is not None:
                on_done(name, value)

    def write(fn: Callable, *args: object) -> None:
        writes.append(writer.submit(fn, *args))
        while len(writes) > max_writes:
            writes.popleft().result()
        report(block=False)

    gc_was_enabled = gc.isenabled()
    # The math creates tens of small tensor objects per block; Python's cyclic collector would walk every
    # live object of the process again and again (measured: ~5 % of the CPU). Nothing here makes cycles.
    gc.disable()
    try:
        prefetch()
        for job, header, order in plans:
            fout = open(job.dst, "wb")  # noqa: SIM115 (closed by the writer thread, in order, or below)
            outputs.append(fout)
            write(fout.write, header)
            for e in order:
                transform = job.transforms.get(e.name)
                if transform is None:
                    write(_copy_range, job.src, fout, e.begin, e.end)
                    continue
                raw = reads.popleft().result()
                prefetch()
                result = compute.submit(transform, raw.view(FLOAT_DTYPES[e.dtype]).view(e.shape))
                results.append((e.name, result))
                write(_write_transformed, fout, result, raw, buffers)
            write(_close_checked, fout, job.dst, len(header) + sum(e.end - e.begin for e in order))
        while writes:
            writes.popleft().result()
        report(block=True)
    finally:
        # On an error: drop what has not started, let what runs finish (never close a file under the
        # writer), then close what is still open; the first error propagates.
        for pool in (reader, compute, writer):
            pool.shutdown(wait=True, cancel_futures=True)
        for fout in outputs:
            fout.close()
        if gc_was_enabled:
            gc.enable()


def copy_side_files(src: Path, dst: Path, skip: set[Path]) -> None:
    """Copy everything but the weight shards (config, tokenizer, processor, index, …), following symlinks."""
    for item in sorted(src.iterdir()):
        if item in skip:
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name)
        else:
            shutil.copy2(item, dst / item.name)
