import json

import torch

from cli.make_data import main
from config import load_config
from diffusionlm.data import build_stream
from diffusionlm.tokenizer import build_tokenizer

SMALL = ["--set", "tokenizer.vocab_size=512", "--set", "model.vocab_size=512", "--set", "tokenizer.train_docs=500",
         "--no-progress"]


def test_make_data_on_tinystories_then_stream(tmp_path, tinystories_path, capsys):
    src = ["--set", 'data.source="files"', "--set", f'data.data_files=["{tinystories_path}"]']
    out = tmp_path / "shards"
    assert main([*src, *SMALL, "--output", str(out), "--shard-tokens", "200000"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["splits"]["train"]["docs"] > 3000
    assert meta["splits"]["val"]["docs"] > 100 and len(meta["splits"]["train"]["shards"]) > 1
    assert "train:" in capsys.readouterr().out

    cfg = load_config(None, ['data.source="shards"', f'data.shards_dir="{out}"', "model.vocab_size=512",
                             "tokenizer.vocab_size=512", "data.num_workers=2"])
    tok = build_tokenizer(cfg)  # the tokenizer.json stored beside the shards
    s = build_stream(cfg, tok, "train")
    ids = torch.cat([next(s)["input_ids"] for _ in range(4)])
    s.close()
    assert ids.shape == (64, 256) and (ids == 2).any() and not (ids == 3).any()
    assert "Once" in tok.decode(ids.flatten().tolist())


def test_make_data_bad_input_exits_2(tmp_path, capsys):
    assert main(["--set", 'data.source="files"', "--set", f'data.data_files=["{tmp_path}/x.jsonl"]', *SMALL,
                 "--output", str(tmp_path / "o")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main([*SMALL, "--output", str(tmp_path / "o"), "--shard-tokens", "0"]) == 2


BUILTIN = [*SMALL, "--set", "data.builtin_num_stories=200", "--set", "tokenizer.train_docs=200"]


def _snapshot(d):
    return {p.name: (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


def test_make_data_refuses_a_non_empty_output_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "train_00000.bin").write_bytes(b"\x01\x02")  # even a stale shard is not deleted without --overwrite
    before = _snapshot(out)
    assert main([*BUILTIN, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(out) in err and "not empty" in err and "--overwrite" in err
    assert _snapshot(out) == before


def test_make_data_refuses_a_run_directory_even_with_overwrite(tmp_path, capsys):
    run = tmp_path / "runs" / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "tokenizer.json").write_text('{"model": {}}\n')
    (run / "config.toml").write_text("[model]\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    before = _snapshot(run)
    assert main([*BUILTIN, "--output", str(run)]) == 2
    assert str(run) in capsys.readouterr().err
    assert main([*BUILTIN, "--output", str(run), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(run) in err and "config.toml" in err and "did not write" in err
    assert _snapshot(run) == before and sorted(p.name for p in run.iterdir()) == sorted(before)


def test_make_data_overwrite_replaces_earlier_shards(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*BUILTIN, "--output", str(out), "--shard-tokens", "2000"]) == 0
    first = json.loads((out / "meta.json").read_text())
    n_train = len(first["splits"]["train"]["shards"])
    assert n_train > 1
    (out / "train_00099.bin").write_bytes(b"\x00\x00")  # a stale shard of an earlier, larger run
    (out / "train_00099.idx").write_bytes(b"\x00" * 8)
    assert main([*BUILTIN, "--output", str(out), "--shard-tokens", "2000"]) == 2
    assert (out / "train_00099.bin").exists()
    capsys.readouterr()
    assert main([*BUILTIN, "--output", str(out), "--shard-tokens", "1000000", "--overwrite"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert len(meta["splits"]["train"]["shards"]) == 1
    assert meta["splits"]["train"]["docs"] == first["splits"]["train"]["docs"]
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "tokenizer.json", "train_00000.bin",
                                                       "train_00000.idx", "val_00000.bin", "val_00000.idx"]
    cfg = load_config(None, ['data.source="shards"', f'data.shards_dir="{out}"', "model.vocab_size=512",
                             "tokenizer.vocab_size=512"])
    s = build_stream(cfg, build_tokenizer(cfg), "train")
    assert next(s)["input_ids"].shape[0] == cfg.data.batch_size
    s.close()
