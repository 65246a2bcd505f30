"""Digests of a saved model: its weight files (the audit record's hashes, the caches' model key) and the files
that decide how it reads and writes text (tokenizer, chat template, processor, generation config)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from smfa.errors import OutputError
from smfa.rundir import file_digest


def weight_files(model_dir: Path) -> list[Path]:
    """The files that hold a model's weights: every ``*.safetensors`` and the shard index, sorted."""
    model_dir = Path(model_dir)
    return sorted(p for p in model_dir.iterdir()
                  if p.is_file() and (p.suffix == ".safetensors" or p.name.endswith(".safetensors.index.json")))


_DIGESTS: dict[tuple[str, int, int], str] = {}


def weight_hashes(model_dir: Path) -> dict[str, str]:
    """``{file name: sha256}`` of :func:`weight_files` (memoised per path, size and mtime within a process)."""
    out = {}
    for path in weight_files(model_dir):
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = file_digest(path)
        out[path.name] = _DIGESTS[key]
    if not out:
        raise OutputError(f"{model_dir} has no safetensors weight files to hash")
    return out


def model_digest(hashes: dict[str, str]) -> str:
    """One sha256 over a model's weight-file hashes (names and digests): a key for caches of its outputs."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


# What decides a model's text in and out besides its weights: the tokenizer (vocabulary, merges, special
# tokens), the chat template, the image processor and the generation defaults.
TEXT_IO_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                 "tokenizer.model", "added_tokens.json", "chat_template.json", "chat_template.jinja",
                 "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                 "generation_config.json")


def text_io_digest(model_dir: Path) -> str:
    """sha256 over the :data:`TEXT_IO_FILES` present in ``model_dir`` (names and contents): two models with the
    same weights but another tokenizer, chat template, processor or generation config answer differently."""
    h = hashlib.sha256()
    for name in TEXT_IO_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            h.update(name.encode() + b"\0" + bytes.fromhex(file_digest(path)))
    return h.hexdigest()
