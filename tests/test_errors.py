"""Bad input and faults: each answered by a one-line error, exit status 2, and no half-written output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from smfa.cli.main import main


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def _one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_missing_model_directory(capsys, tiny_bench_dir: Path, tmp_path: Path) -> None:
    rc, err = _run(capsys, ["eval", "--bench", str(tiny_bench_dir), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "e")])
    _one_line_error(rc, err, "does not exist")
    assert not (tmp_path / "e").exists()


def test_a_missing_relative_path_with_a_slash_is_an_error_never_a_hub_fetch(capsys, tiny_bench_dir: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    """``runs/vanila`` (a typo) was taken for a hub id and fetched; hub ids need ``hf:`` now."""
    import transformers

    def no_fetch(*_a, **_k):
        raise AssertionError("a hub fetch was attempted")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", no_fetch)
    monkeypatch.chdir(tmp_path)
    rc, err = _run(capsys, ["eval", "--bench", str(tiny_bench_dir), "--model", "runs/vanila", "--out", str(tmp_path / "e")])
    _one_line_error(rc, err, "does not exist", "hf:runs/vanila")
    rc, err = _run(capsys, ["eval", "--bench", str(tiny_bench_dir), "--model", "hf:a/b/c", "--out", str(tmp_path / "e")])
    _one_line_error(rc, err, "not a hub id")
    assert not (tmp_path / "e").exists()


def test_corrupt_model_directory(capsys, tiny_bench_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    rc, err = _run(capsys, ["eval", "--bench", str(tiny_bench_dir), "--model", str(bad), "--out", str(tmp_path / "e")])
    _one_line_error(rc, err, "corrupt")
    (bad / "config.json").write_text(json.dumps({"model_type": "llava"}))
    rc, err = _run(capsys, ["eval", "--bench", str(tiny_bench_dir), "--model", str(bad), "--out", str(tmp_path / "e")])
    _one_line_error(rc, err, "safetensors")
    assert not (tmp_path / "e").exists()


def test_unsupported_model_type(capsys, tiny_bench_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bert"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bad / "model.safetensors").write_bytes(b"")
    rc, err = _run(capsys, ["eval", "--bench", str(tiny_bench_dir), "--model", str(bad), "--out", str(tmp_path / "e")])
    _one_line_error(rc, err, "'bert'", "llava")


def test_negative_k_rejected_before_any_work(capsys, tiny_bench_dir: Path, tmp_path: Path) -> None:
    rc, err = _run(capsys, ["unlearn", "--method", "smfa", "--bench", str(tiny_bench_dir), "--model", str(tmp_path),
                            "--out", str(tmp_path / "u"), "--k", "-1"])
    _one_line_error(rc, err, "k must be")
    assert not (tmp_path / "u").exists()


def test_unknown_method_and_bad_param(capsys, tiny_bench_dir: Path, tmp_path: Path) -> None:
    rc, err = _run(capsys, ["unlearn", "--method", "nope", "--bench", str(tiny_bench_dir), "--model", str(tmp_path),
                            "--out", str(tmp_path / "u")])
    _one_line_error(rc, err, "unknown method")
    rc, err = _run(capsys, ["unlearn", "--method", "npo", "--bench", str(tiny_bench_dir), "--model", str(tmp_path),
                            "--out", str(tmp_path / "u"), "--param", "gamma=3"])
    _one_line_error(rc, err, "gamma")


def test_forget_ratio_the_bench_does_not_have(tiny_bench_dir: Path) -> None:
    from smfa.bench import Bench
    from smfa.errors import ConfigError

    with pytest.raises(ConfigError, match="20"):
        Bench.load(tiny_bench_dir).forget_people("20")


def test_empty_forget_set(capsys, tiny_bench_dir: Path, tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    shutil.copytree(tiny_bench_dir, bench)
    splits = json.loads((bench / "splits.json").read_text())
    splits["forget_5"] = []
    (bench / "splits.json").write_text(json.dumps(splits))
    rc, err = _run(capsys, ["unlearn", "--method", "ga", "--bench", str(bench), "--model", str(tmp_path),
                            "--forget", "5", "--out", str(tmp_path / "u")])
    assert rc == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "u").exists()


def test_existing_output_directory_needs_overwrite(capsys, tiny_bench_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    rc, err = _run(capsys, ["bench", "build", "--preset", "tiny", "--out", str(out)])
    _one_line_error(rc, err, "--overwrite")


def test_unwritable_output_directory(capsys, tiny_bench_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc, err = _run(capsys, ["eval", "--bench", str(tiny_bench_dir), "--model", str(tmp_path), "--out", str(blocker / "out")])
    assert rc == 2 and "Traceback" not in err, err


def test_mismatched_adapters_and_non_finite_deltas(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from smfa.errors import SculptError
    from smfa.sculpt import merge_sculpted_into, sculpt_delta

    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2)
    for name, targets in (("f", ["q_proj", "v_proj"]), ("a", ["q_proj"])):
        torch.manual_seed(0)
        m = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=2, target_modules=targets))
        m.save_pretrained(tmp_path / name)
    with pytest.raises(SculptError):
        merge_sculpted_into(LlamaForCausalLM(cfg), tmp_path / "f", tmp_path / "a", k=1.0)
    with pytest.raises(SculptError, match="finite|NaN|inf"):
        sculpt_delta(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2), k=1.0)


def test_killed_checkpoint_merge_leaves_no_complete_output(tmp_path: Path, monkeypatch) -> None:
    """A merge that dies mid-write leaves no directory that looks complete (temporary dir + rename)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    import smfa.sculpt.merge as sculpt

    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2)
    base = LlamaForCausalLM(cfg)
    base.save_pretrained(tmp_path / "src", max_shard_size="10KB")
    for name in ("f", "a"):
        m = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
        m.save_pretrained(tmp_path / name)
    calls = {"n": 0}
    real = sculpt._module_stats

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(sculpt, "_module_stats", dying)
    with pytest.raises(KeyboardInterrupt):
        sculpt.sculpt_checkpoint(tmp_path / "src", tmp_path / "f", tmp_path / "a", tmp_path / "out", k=1.0, progress=False)
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())
