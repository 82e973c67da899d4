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
