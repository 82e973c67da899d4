"""Bad rows are skipped or truncated and counted; bad settings fail at start naming the setting."""

import json

import pytest

from diffusionlm.data import DataError, build_stream
from tests.diffusionlm.data.conftest import make_cfg


def _stream(path, *extra, tok):
    cfg = make_cfg('data.source="files"', f'data.data_files=["{path}"]', "data.shuffle_buffer_size=0",
                   "data.packing=false", *extra)
    return build_stream(cfg, tok, "train")


def test_bad_jsonl_rows_are_skipped_and_counted(tmp_path, tok512):
    good = json.dumps({"text": "A good story about a cat."}).encode()
    lines = [
        good,
        b'{"text": ""}',  # empty
        b'{"text": "   "}',  # whitespace only
        b'{"text": 42}',  # not a string
        b'{"text": null}',
        b'{"title": "no text field"}',
        b'{"text": "bad \xff\xfe bytes"}',  # invalid UTF-8
        b'{"text": "broken json',
        b"",  # blank line
        json.dumps({"text": "x" * 5000}).encode(),  # overlong: truncated to max_doc_chars
        good,
    ]
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    s = _stream(f, "data.max_doc_chars=1000", "data.batch_size=3", tok=tok512)
    next(s)  # rows: good, overlong, good
    st = s.stats()
    assert st["data.skipped_rows"] == 8 and st["data.truncated_rows"] == 1


def test_invalid_utf8_in_text_file_is_skipped(tmp_path, tok512):
    f = tmp_path / "t.txt"
    f.write_bytes(b"first line\nbad \xff line\n\nthird line\n")
    s = _stream(f, "data.batch_size=2", tok=tok512)
    b = next(s)
    assert tok512.decode(b["input_ids"][1][b["attention_mask"][1]][:-1].tolist()) == "third line"
    assert s.stats()["data.skipped_rows"] == 2  # the bad line and the empty one


def test_missing_file_fails_at_start(tmp_path, tok512):
    with pytest.raises(DataError, match=r"data\.data_files: file not found"):
        _stream(tmp_path / "missing.jsonl", tok=tok512)
    with pytest.raises(DataError, match=r"data\.data_files: no file matches"):
        _stream(tmp_path / "*.parquet", tok=tok512)


def test_wrong_text_field_fails_at_start(tmp_path, tok512):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"story": "hello"}) + "\n")
    with pytest.raises(DataError, match=r"data\.text_field='text' not found.*story"):
        _stream(f, tok=tok512)


def test_unknown_extension_fails_at_start(tmp_path, tok512):
    f = tmp_path / "d.csv"
    f.write_text("text\nhello\n")
    with pytest.raises(DataError, match=r"data\.file_format"):
        _stream(f, tok=tok512)


def test_no_usable_documents_is_an_error_not_a_hang(tmp_path, tok512):
    f = tmp_path / "empty.jsonl"
    f.write_text('{"text": ""}\n' * 5)
    with pytest.raises(DataError, match="no usable documents"):
        next(_stream(f, tok=tok512))
