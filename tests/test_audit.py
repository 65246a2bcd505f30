"""The audit record's signature (`--key-file`, `smfa audit verify RUN --key-file`) and the cache of the parent
model's retain answers. No training: the runs here are written by `write_audit` over stand-in weight files."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from smfa.models.digest import weight_hashes
from smfa.stages.audit import AUDIT_JSON, AUDIT_MD, AUDIT_SIG, write_audit
from smfa.cli.main import main


def _key(path: Path) -> Path:
    path.write_text(secrets.token_hex(32) + "\n")  # as `python -c '...print(secrets.token_hex(32))' > key` writes it
    return path


def _run(tmp_path: Path, key_file: Path | None = None) -> Path:
    """An unlearning run's audit record over stand-in weight files (the parent's and the run's own)."""
    from smfa.stages.audit import read_key
    from smfa.methods.base import MethodConfig
    from smfa.stages.unlearn import UnlearnConfig

    parent, run = tmp_path / "parent", tmp_path / "run"
    parent.mkdir()
    (run / "model").mkdir(parents=True)
    (parent / "model.safetensors").write_bytes(b"parent weights")
    (run / "model" / "model.safetensors").write_bytes(b"unlearned weights")
    write_audit(run, run=run, cfg=UnlearnConfig(bench=str(tmp_path), model=str(parent), out=str(run)), hp=MethodConfig(),
                group=SimpleNamespace(label="request", people={"p0011"}, earlier=()), data=SimpleNamespace(forget_rows=[]),
                bench=SimpleNamespace(root=tmp_path, checksum="c" * 64),
                requests={"parent": str(parent), "chain": [], "root": str(parent)}, input_dir=parent,
                input_hashes=weight_hashes(parent), output_hashes=weight_hashes(run / "model"), metrics=None,
                parent_retain=None, reference_model=None, anchor_cache_hit=False,
                wall={"unlearn": 1.0, "evaluation": None, "total": 2.0}, key=read_key(key_file))
    return run


def _verify(capsys, run: Path, *key: Path) -> tuple[int, list[str], list[str]]:
    rc = main(["audit", "verify", str(run), *(["--key-file", str(key[0])] if key else [])])
    captured = capsys.readouterr()
    return rc, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def _one_line_error(result: tuple[int, list[str], list[str]], *needles: str) -> None:
    rc, _, err = result
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def _forge_weights(run: Path) -> None:
    """What tampering looks like: other weights, and the record's hash of them updated to match."""
    from smfa.rundir import file_digest

    weights = run / "model" / "model.safetensors"
    weights.write_bytes(b"other weights")
    audit = json.loads((run / AUDIT_JSON).read_text())
    audit["weights"]["output"]["files"]["model.safetensors"] = file_digest(weights)
    (run / AUDIT_JSON).write_text(json.dumps(audit, indent=2))


def test_an_unsigned_record_checks_the_weights_and_says_it_proves_no_more(capsys, tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert not (run / AUDIT_SIG).exists()
    rc, out, err = _verify(capsys, run)
    assert rc == 0 and out[0].startswith("OK: 2 weight files match") and not err
    assert len(out) == 2 and "unsigned" in out[1] and "accidental change" in out[1]
    # Its limit: weights replaced and the record edited to match still read OK.
    _forge_weights(run)
    assert _verify(capsys, run)[0] == 0
    # A key cannot authenticate a record that has no signature (it may have been removed).
    _one_line_error(_verify(capsys, run, _key(tmp_path / "key")), "is not signed", AUDIT_SIG)


def test_a_signed_record_verifies_only_with_its_key_and_unchanged(capsys, tmp_path: Path) -> None:
    key = _key(tmp_path / "key")
    run = _run(tmp_path, key)
    sig = json.loads((run / AUDIT_SIG).read_text())
    assert sig["algorithm"] == "HMAC-SHA256" and len(sig["signature"]) == 64
    rc, out, err = _verify(capsys, run, key)
    assert rc == 0 and not err and out == [f"OK: 2 weight files match {run / AUDIT_JSON}; its HMAC-SHA256 signature "
                                           f"holds (key id {sig['key_id']})"]
    # The key is never in the run (nor the key file).
    secret = key.read_text().strip()
    assert not any(secret in p.read_text(errors="replace") for p in run.rglob("*") if p.is_file())
    _one_line_error(_verify(capsys, run), "is signed", "--key-file")
    _one_line_error(_verify(capsys, run, _key(tmp_path / "other")), "signed with another key")
    # The signature covers the record's values, not its layout.
    original = (run / AUDIT_JSON).read_text()
    (run / AUDIT_JSON).write_text(json.dumps(json.loads(original), indent=4, sort_keys=True))
    assert _verify(capsys, run, key)[0] == 0
    _forge_weights(run)
    _one_line_error(_verify(capsys, run, key), "was changed after it was signed")
    (run / AUDIT_JSON).write_text(original)
    _one_line_error(_verify(capsys, run, key), "model.safetensors differs")  # the record is intact: the weights are not
    (run / "model" / "model.safetensors").write_bytes(b"unlearned weights")
    assert _verify(capsys, run, key)[0] == 0
    md = (run / AUDIT_MD).read_text()
    (run / AUDIT_MD).write_text(md.replace("1 people", "0 people"))
    _one_line_error(_verify(capsys, run, key), "was changed after it was signed")
    (run / AUDIT_MD).write_text(md)
    (run / AUDIT_SIG).unlink()
    _one_line_error(_verify(capsys, run, key), "is not signed")


@pytest.mark.parametrize("content, needle", [(None, "does not exist"), ("short\n", "holds 5 bytes")])
def test_a_missing_or_weak_key_file_is_a_one_line_error(capsys, tmp_path: Path, content, needle) -> None:
    run = _run(tmp_path)
    key = tmp_path / "key"
    if content is not None:
        key.write_text(content)
    _one_line_error(_verify(capsys, run, key), "--key-file", needle)


def test_the_parent_answers_cache_is_kept_apart_per_dtype_and_device_kind(monkeypatch, tmp_path: Path,
                                                                          micro_bench_dir: Path) -> None:
    """The parent's retain answers are cached per weight digest; answers in bf16 are not those in fp32, so a
    parent loaded in another precision asks its questions again, and one in the same precision does not."""
    import smfa.eval.pipeline as pipeline
    from smfa.stages.audit import parent_retain_metrics
    from smfa.bench import Bench
    from smfa.eval.pipeline import EvalConfig
    from smfa.eval.schema import Generation

    monkeypatch.setenv("SMFA_CACHE_DIR", str(tmp_path / "cache"))
    asked: list[str] = []

    def answer_with_references(parent, bench, sets, forgotten, *, cfg):
        asked.append(next(parent.model.parameters()).dtype)
        return [Generation(set=name, question_id=r.id, kind=r.kind, attribute=r.attribute, question=r.question,
                           answer=r.answer, reference=r.answer, fact=r.fact, person_id=r.person_id,
                           is_forget_person=False) for name, rows in sets.items() for r in rows]

    monkeypatch.setattr(pipeline, "generate_sets", answer_with_references)
    bench = Bench.load(micro_bench_dir, verify_images=False)
    cfg = EvalConfig(bench=str(micro_bench_dir), forget="10", limit=2, progress=False)
    fp32 = SimpleNamespace(model=torch.nn.Linear(2, 2))
    bf16 = SimpleNamespace(model=torch.nn.Linear(2, 2).to(torch.bfloat16))
    for parent in (fp32, bf16, fp32, bf16):
        parent_retain_metrics(parent, bench, cfg, digest="d" * 64)
    assert asked == [torch.float32, torch.bfloat16]  # one generation per precision; the repeats are cache hits


@pytest.mark.slow
def test_forget_with_a_key_file_signs_its_record_and_never_copies_the_key(capsys, micro_bench_dir: Path,
                                                                          micro_vanilla: Path, tmp_path: Path) -> None:
    key = _key(tmp_path / "key")
    request = ["forget", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla), "--people", "p0011,p0029",
               "--method", "ga", "--param", "max_steps=1", "--reference", "none", "--no-eval", "--no-verify"]
    # A missing key fails in one line before any work.
    rc = main(request + ["--out", str(tmp_path / "none"), "--key-file", str(tmp_path / "missing")])
    _one_line_error((rc, [], capsys.readouterr().err.strip().splitlines()), "--key-file", "does not exist")
    assert not (tmp_path / "none").exists()
    run = tmp_path / "request"
    assert main(request + ["--out", str(run), "--key-file", str(key)]) == 0
    capsys.readouterr()
    assert (run / AUDIT_SIG).is_file()
    secret = key.read_bytes().strip()
    assert not any(secret in p.read_bytes() for p in run.rglob("*") if p.is_file())
    rc, out, _ = _verify(capsys, run, key)
    assert rc == 0 and "signature holds" in out[0]
    _one_line_error(_verify(capsys, run), "is signed")
