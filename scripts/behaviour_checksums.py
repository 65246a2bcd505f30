"""Checksums of everything smfa produces on the micro bench: a guard for refactors that must change nothing.

    OMP_NUM_THREADS=1 python scripts/behaviour_checksums.py --out before.json     # on the old code
    OMP_NUM_THREADS=1 python scripts/behaviour_checksums.py --out after.json      # on the new code
    python scripts/behaviour_checksums.py --diff before.json after.json

Runs smfa's own CLI, one thread, fixed seeds: the tiny and micro benches, a short vanilla and oracle
fine-tune (LoRA and full), every registered method's unlearning with its evaluation, an evaluation with
every attack, a sculpt sweep and ``--merge-to``, and a deletion-request chain (``forget`` twice). It hashes
each bench file, each weight tensor (by name) and each JSON result with the fields that record when, where
and how long left out; the shipped vanillas are hashed as they are on disk. About 25 minutes on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
# JSON keys whose values record the run, not its result.
VOLATILE = ("seconds", "time", "date", "created", "started", "finished", "host", "path", "dir", "out", "root",
            "duration", "elapsed", "version", "python", "torch", "transformers", "platform", "cpu", "peak",
            "rss", "git", "command", "argv", "bench", "model", "run", "cache", "src", "adapter", "digest",
            "oracle", "vanilla", "parent", "chain", "sig", "key", "runtime", "per_second")


def _volatile(key: str) -> bool:
    k = key.lower()
    return any(v in k for v in VOLATILE)


def _canonical(value: object) -> object:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items()) if not _volatile(str(k))}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return round(value, 9)
    return value


def _hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def hash_tree(root: Path, label: str, out: dict[str, str]) -> None:
    """Weights tensor by tensor, JSON without volatile keys, other data files whole; logs and reports skipped."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f"{label}/{path.relative_to(root)}"
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as fh:
                for name in sorted(fh.keys()):
                    t = fh.get_tensor(name)
                    out[f"{rel}:{name}"] = _hash_bytes(t.contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
        elif path.suffix == ".json" and path.name not in ("manifest.json", "trainer_state.json", "audit.json"):
            try:
                out[rel] = _hash_bytes(json.dumps(_canonical(json.loads(path.read_text())), sort_keys=True).encode())
            except json.JSONDecodeError:
                out[rel] = _hash_bytes(path.read_bytes())
        elif path.suffix == ".jsonl":
            lines = [json.dumps(_canonical(json.loads(line)), sort_keys=True) for line in path.read_text().splitlines() if line.strip()]
            out[rel] = _hash_bytes("\n".join(lines).encode())
        elif path.suffix in (".png", ".txt", ".npy", ".pt") and "checkpoint" not in rel:
            out[rel] = _hash_bytes(path.read_bytes())


def smfa(*args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    if "--out" in args and Path(args[args.index("--out") + 1]).exists():
        return  # made by an earlier, interrupted run of this script (same --work)
    if "--merge-to" in args and Path(args[args.index("--merge-to") + 1]).exists():
        return
    print("$ smfa", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-c", "import sys; from smfa.cli.main import main; sys.exit(main())", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def run_all(work: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for shipped in sorted((ROOT / "src/smfa/pretrained").iterdir()) + sorted((ROOT / "tests/fixtures/pretrained").iterdir()):
        hash_tree(shipped, f"shipped/{shipped.name}", out)
    b = work / "bench"
    smfa("bench", "build", "--preset", "tiny", "--seed", "0", "--out", str(work / "tiny"), "--quiet")
    hash_tree(work / "tiny", "bench-tiny", out)
    smfa("bench", "build", "--preset", "tiny", "--seed", "1", "--n-people", "60", "--shape-images", "160",
         "--anchor-size", "24", "--reference-share", "0.3", "--out", str(b), "--quiet")
    hash_tree(b, "bench-micro", out)
    v, o = work / "vanilla", work / "oracle"
    smfa("finetune", "--bench", str(b), "--out", str(v), "--steps", "300", "--lr", "2e-3", "--no-pretrained")
    smfa("finetune", "--bench", str(b), "--out", str(o), "--steps", "150", "--lr", "2e-3", "--people", "retain",
         "--forget", "10", "--no-pretrained")
    smfa("finetune", "--bench", str(b), "--out", str(work / "lora-ft"), "--steps", "40", "--lora", "--no-pretrained")
    for run in ("vanilla", "oracle", "lora-ft"):
        hash_tree(work / run, run, out)
    common = ("--bench", str(b), "--model", str(v), "--eval-limit", "6", "--epochs", "1")
    methods = subprocess.run([sys.executable, "-c", "from smfa.methods import method_names; print(' '.join(method_names()))"],
                             check=True, capture_output=True, text=True).stdout.split()
    for m in methods:
        smfa("unlearn", "--method", m, *common, "--out", str(work / f"u-{m}"), "--oracle", str(o))
        hash_tree(work / f"u-{m}", f"unlearn-{m}", out)
    smfa("unlearn", "--method", "smfa", *common, "--dual", "--out", str(work / "u-dual"))
    hash_tree(work / "u-dual", "unlearn-smfa-dual", out)
    smfa("unlearn", "--method", "smfa", *common, "--target", "visual", "--out", str(work / "u-visual"))
    hash_tree(work / "u-visual", "unlearn-smfa-visual", out)
    smfa("eval", "--bench", str(b), "--model", str(work / "u-smfa"), "--out", str(work / "attacks"), "--limit", "6",
         "--attacks", "all", "--relearn-steps", "3")
    hash_tree(work / "attacks", "eval-attacks", out)
    smfa("sculpt", str(work / "u-smfa"), "--k", "0,5", "--limit", "6", "--out", str(work / "sweep"))
    hash_tree(work / "sweep", "sculpt-sweep", out)
    smfa("sculpt", str(work / "u-smfa"), "--k", "3", "--merge-to", str(work / "merged"))
    hash_tree(work / "merged", "sculpt-merge", out)
    people = [json.loads(line) for line in (b / "people.jsonl").read_text().splitlines() if line.strip()]
    known = [p["person_id"] for p in people if p.get("role", "known") == "known"]
    smfa("forget", "--model", str(v), "--bench", str(b), "--people", ",".join(known[:2]), "--out", str(work / "req1"),
         "--eval-limit", "6", "--param", "epochs=1")
    smfa("forget", "--model", str(work / "req1"), "--bench", str(b), "--people", known[2], "--out", str(work / "req2"),
         "--eval-limit", "6", "--param", "epochs=1")
    for run in ("req1", "req2"):
        hash_tree(work / run, run, out)
    return out


def diff(a: dict[str, str], b: dict[str, str]) -> int:
    changed = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    for title, keys in (("changed", changed), ("only before", only_a), ("only after", only_b)):
        for k in keys:
            print(f"{title}: {k}")
    print(f"{len(a.keys() & b.keys())} compared, {len(changed)} changed, {len(only_a)} only before, {len(only_b)} only after")
    return 1 if changed or only_a or only_b else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the checksums (JSON) here")
    parser.add_argument("--work", help="keep the runs in this directory (default: a temporary one)")
    parser.add_argument("--diff", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two checksum files")
    args = parser.parse_args()
    if args.diff:
        sys.exit(diff(*(json.loads(Path(p).read_text()) for p in args.diff)))
    if not args.out:
        parser.error("--out is required (or --diff)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ["SMFA_CACHE_DIR"] = str(work / "cache")  # inherited by every stage
        sums = run_all(work)
    Path(args.out).write_text(json.dumps(sums, indent=1, sort_keys=True) + "\n")
    print(f"{len(sums)} checksums -> {args.out}")


if __name__ == "__main__":
    main()
