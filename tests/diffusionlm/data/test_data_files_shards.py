"""Local files through `datasets` streaming, a Hub-style dataset directory, and token shards agree."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from diffusionlm.data import DataError, build_stream
from diffusionlm.data.builtin_corpus import generate_story
from diffusionlm.data.make_shards import make_shards
from tests.diffusionlm.data.conftest import make_cfg

DOCS = [generate_story(3, i).replace("\n", " ") for i in range(120)]  # one line each, for the text format


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    (d / "docs.jsonl").write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(DOCS)))
    pq.write_table(pa.table({"text": DOCS}), d / "docs.parquet", row_group_size=25)
    (d / "docs.txt").write_text("\n".join(DOCS) + "\n")
    return d


def _files_cfg(path, *extra):
    return make_cfg('data.source="files"', f'data.data_files=["{path}"]', *extra)


def _batches(cfg, tok, n=8, split="train"):
    s = build_stream(cfg, tok, split)
    out = [next(s) for _ in range(n)]
    s.close()
    return out


def _equal(a, b):
    return all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))


@pytest.mark.parametrize("packing", ["true", "false"])
def test_jsonl_parquet_text_and_shards_give_identical_batches(data_files, tok512, tmp_path, packing):
    extra = (f"data.packing={packing}",)
    ref = _batches(_files_cfg(data_files / "docs.jsonl", *extra), tok512)
    assert _equal(ref, _batches(_files_cfg(data_files / "docs.parquet", *extra), tok512))
    assert _equal(ref, _batches(_files_cfg(data_files / "docs.txt", *extra), tok512))
    make_shards(_files_cfg(data_files / "docs.jsonl"), tok512, tmp_path / "shards", shard_tokens=3000)
    shard_cfg = make_cfg('data.source="shards"', f'data.shards_dir="{tmp_path / "shards"}"', *extra)
    assert _equal(ref, _batches(shard_cfg, tok512))
    val_ref = _batches(_files_cfg(data_files / "docs.jsonl", *extra), tok512, 2, "val")
    assert _equal(val_ref, _batches(shard_cfg, tok512, 2, "val"))


def test_hub_loader_on_a_local_dataset_dir_offline(tmp_path, tok512, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"story": t}) + "\n" for t in DOCS[:100]))
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps({"story": t}) + "\n" for t in DOCS[100:]))
    cfg = make_cfg('data.source="hub"', f'data.dataset_name="{tmp_path}"', 'data.val_split="validation"',
                   'data.text_field="story"', "data.packing=false", "model.context_length=512",
                   "inference.total_length=32")
    val = build_stream(cfg, tok512, "val")
    first = next(val)
    assert val.describe()["hf_split"] == "validation" and val.describe()["dataset_name"] == str(tmp_path)
    n = int(first["attention_mask"][0].sum())
    assert tok512.decode(first["input_ids"][0][: n - 1].tolist()) == DOCS[100]
    with pytest.raises(DataError, match="text_field='text' not found"):
        build_stream(make_cfg('data.source="hub"', f'data.dataset_name="{tmp_path}"'), tok512, "train")


@pytest.mark.slow
def test_unknown_hub_dataset_fails_at_start_offline():
    # huggingface_hub reads the offline flags at import, so this needs a fresh interpreter
    code = (
        "from config import load_config\n"
        "from diffusionlm.tokenizer import train_tokenizer\n"
        "from diffusionlm.data import DataError, build_stream\n"
        "cfg = load_config(None, ['data.source=\"hub\"', 'data.dataset_name=\"no-such-user/no-such-dataset-xyz\"'])\n"
        "try:\n"
        "    build_stream(cfg, train_tokenizer(['a b c'] * 3, 300), 'train')\n"
        "except DataError as e:\n"
        "    print('DataError:', e)\n"
    )
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "DataError: cannot open hub dataset data.dataset_name='no-such-user/no-such-dataset-xyz'" in r.stdout, (
        r.stdout + r.stderr
    )


def test_shards_are_byte_identical_and_typed(data_files, tok512, tmp_path):
    cfg = _files_cfg(data_files / "docs.jsonl")
    meta = make_shards(cfg, tok512, tmp_path / "a", shard_tokens=5000)
    make_shards(cfg, tok512, tmp_path / "b", shard_tokens=5000)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "tokenizer.json" in names and "meta.json" in names and len(meta["splits"]["train"]["shards"]) > 1
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert meta["dtype"] == "uint16" and meta["splits"]["train"]["docs"] == 114 and meta["splits"]["val"]["docs"] == 6
    assert meta["vocab_size"] == 512 and len(meta["tokenizer_sha256"]) == 64


def test_shards_refuse_another_tokenizer(data_files, tok512, tmp_path):
    from diffusionlm.tokenizer import train_tokenizer

    make_shards(_files_cfg(data_files / "docs.jsonl"), tok512, tmp_path, shard_tokens=5000)
    other = train_tokenizer(DOCS, 400)
    with pytest.raises(DataError, match="another tokenizer"):
        build_stream(make_cfg('data.source="shards"', f'data.shards_dir="{tmp_path}"'), other, "train")
    with pytest.raises(DataError, match=r"meta\.json"):
        build_stream(make_cfg('data.source="shards"', f'data.shards_dir="{tmp_path / "nope"}"'), tok512, "train")


def test_shard_read_path_does_not_import_datasets(data_files, tok512, tmp_path):
    make_shards(_files_cfg(data_files / "docs.jsonl"), tok512, tmp_path, shard_tokens=5000)
    code = (
        "import sys\n"
        "from config import load_config\n"
        "from diffusionlm.tokenizer import build_tokenizer\n"
        "from diffusionlm.data import build_stream\n"
        f"cfg = load_config(None, ['data.source=\"shards\"', 'data.shards_dir=\"{tmp_path}\"',"
        " 'model.vocab_size=512', 'tokenizer.vocab_size=512', 'model.context_length=64',"
        " 'inference.total_length=32', 'data.num_workers=1'])\n"
        "s = build_stream(cfg, build_tokenizer(cfg), 'train')\n"
        "assert next(s)['input_ids'].shape == (16, 64)\n"
        "s.close()\n"
        "assert 'datasets' not in sys.modules, 'datasets was imported'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
