"""Where the user's cache lives: trained tiny models (:mod:`smfa.stages.cache`), reference labels, retaining
anchors, parent answers. ``$SMFA_CACHE_DIR`` overrides the location (default ``$XDG_CACHE_HOME/smfa`` or
``~/.cache/smfa``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("SMFA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smfa"
