import json

from benchmarking.bench_data import main


def test_bench_data_reports_both_modes_and_worker_counts(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["--jsonl", str(tmp_path / "absent.jsonl"), "--batches", "3", "--warmup", "1", "--workers", "0", "1",
            "--set", "tokenizer.vocab_size=400", "--set", "tokenizer.train_docs=100",
            "--set", "data.builtin_num_stories=300", "--output", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert report["config"]["source"] == "builtin" and len(report["git_commit"]) >= 7
    cases = {(r["mode"], r["num_workers"]) for r in report["results"]}
    assert cases == {("stream", 0), ("stream", 1), ("shards", 0), ("shards", 1)}
    assert all(r["tokens_per_s"] > 0 and r["tokens"] == 3 * 16 * 128 for r in report["results"])
