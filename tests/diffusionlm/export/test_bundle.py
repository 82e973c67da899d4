"""`export_bundle` on tiny models, with real torch.export and real onnxruntime: the files, their checksums, the
artifacts reproducing the eager model on an input the export never saw, fp16 weights, time conditioning, and a
model that breaks in fp16 refused with nothing written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open

from config import load_config
from config.schema import ExportConfig
from diffusionlm.export import (
    ONNX,
    PROGRAM,
    TRTEXEC,
    WEIGHTS,
    Denoiser,
    ExportError,
    ParityError,
    compare,
    export_bundle,
    load_weights,
    run_onnx,
    run_program,
    sample_inputs,
    verify_bundle,
)
from diffusionlm.export.source import describe_source
from diffusionlm.inference import load_model
from tests.diffusionlm.export.runs import beyond_fp16, condition_on_time, final_export, trained_run

BATCH, LENGTH = 2, 16
FILES = {WEIGHTS, PROGRAM, ONNX, "config.toml", "tokenizer.json", "manifest.json"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory.mktemp("export_run"))


@pytest.fixture(scope="module")
def bundle(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(ExportConfig(checkpoint=str(run), output=str(out), batch=BATCH, length=LENGTH))
    return out


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_the_bundle_holds_every_artifact_with_its_checksum(bundle: Path) -> None:
    assert {p.name for p in bundle.iterdir()} == FILES
    files = _manifest(bundle)["files"]
    assert set(files) == FILES - {"manifest.json"}
    for name, entry in files.items():
        data = (bundle / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    assert verify_bundle(bundle) == []
    assert _leftovers(bundle.parent) == [], "the temporary directory is renamed, not left beside the bundle"


def test_a_modified_copy_fails_verification(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    with open(copy / "tokenizer.json", "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(b"[" if first != b"[" else b"{")
    (copy / "extra.bin").write_bytes(b"x")
    problems = verify_bundle(copy)
    assert any("tokenizer.json does not match its sha256" in p for p in problems)
    assert any("extra.bin is not in manifest.json" in p for p in problems)


def test_program_and_onnx_reproduce_the_eager_model_on_a_fresh_input(run: Path, bundle: Path) -> None:
    model, cfg, _ = load_model(run)
    inputs = sample_inputs(cfg.model, BATCH, LENGTH, seed=123)
    assert not torch.equal(inputs["input_ids"], sample_inputs(cfg.model, BATCH, LENGTH, seed=0)["input_ids"])
    with torch.no_grad():
        eager = Denoiser(model)(*inputs.values())
    for logits in (run_program(bundle / PROGRAM, inputs), run_onnx(bundle / ONNX, inputs)):
        c = compare(eager, logits)
        assert c.finite_ok and c.max_abs_diff < 1e-4 and c.argmax_agreement == 1.0
        assert torch.isneginf(torch.as_tensor(logits)[..., cfg.model.mask_token_id]).all(), "<mask> stays -inf"

    program = torch.export.load(str(bundle / PROGRAM))
    namespaces = {str(n.target).split(".")[0] for n in program.graph.nodes if n.op == "call_function"}
    assert namespaces <= {"aten", "<built-in function getitem>"}, f"only ATen ops in the graph, got {namespaces}"

    session = ort.InferenceSession(str(bundle / ONNX), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [("input_ids", "tensor(int64)", [BATCH,
                                                                                                         LENGTH])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("logits", [BATCH, LENGTH, cfg.model.vocab_size])]


def test_weights_are_fp16_stored_once_and_load_into_a_fresh_model(run: Path, bundle: Path) -> None:
    with safe_open(str(bundle / WEIGHTS), "pt") as f:
        names = list(f.keys())
        assert {f.get_tensor(n).dtype for n in names} == {torch.float16}
    assert ("embed.weight" in names) != ("head.weight" in names), "the tied embedding/head is stored once"

    model, cfg, _ = load_model(run)
    fresh = load_weights(cfg.model, bundle / WEIGHTS)
    assert next(fresh.parameters()).dtype == torch.float32
    inputs = sample_inputs(cfg.model, BATCH, LENGTH, seed=7)
    with torch.no_grad():
        c = compare(Denoiser(model)(*inputs.values()), Denoiser(fresh)(*inputs.values()))
    assert c.finite_ok and c.masked_ok and c.max_abs_diff < 1e-2 and c.argmax_agreement >= 0.95


def test_the_manifest_describes_model_shapes_provenance_and_parity(run: Path, bundle: Path) -> None:
    m = _manifest(bundle)
    assert m["format"] == "diffusionlm-export/1" and m["target"] == "jetson"
    assert (m["batch"], m["length"]) == (BATCH, LENGTH)
    assert m["model"] | {"d_model": 32, "n_layers": 1, "vocab_size": 512, "context_length": 32} == m["model"]
    assert m["inputs"] == [{"name": "input_ids", "dtype": "int64", "shape": [BATCH, LENGTH]}]
    assert m["outputs"][0]["shape"] == [BATCH, LENGTH, 512]
    art = m["artifacts"]
    assert (art[WEIGHTS]["dtype"], art[PROGRAM]["dtype"], art[ONNX]["dtype"]) == ("float16", "float32", "float32")
    assert art[ONNX]["opset"] == 18 and "MatMul" in art[ONNX]["ops"]
    assert m["tensorrt"]["build"] == TRTEXEC
    assert all(m["created_by"][k] for k in ("torch", "onnx", "onnxruntime", "onnxscript"))
    assert m["source"]["path"] == str(run.resolve()) and m["source"]["weights_dir"].endswith("final")
    p = m["parity"]
    for name in ("torch_export", "onnxruntime"):
        assert p[name]["max_abs_diff"] <= 1e-4 and p[name]["masked_logit"] == "-inf" and p[name]["masked_ok"]
    assert p["fp16_weights"]["argmax_agreement"] >= 0.95 and 0 < p["fp16_weights"]["max_abs_diff"] < 1e-2
    assert p["fp16_compute"]["gated"] is True and p["input"]["masked_positions"] > 0


def test_config_and_tokenizer_come_from_the_run(run: Path, bundle: Path) -> None:
    _, cfg, tokenizer = load_model(run)
    assert load_config(bundle / "config.toml", environ={}).model == cfg.model
    assert (bundle / "tokenizer.json").read_bytes() == tokenizer.read_bytes()


def test_a_checkpoint_source_records_its_step_and_manifest(run: Path) -> None:
    ckpt = run / "checkpoints" / "step_3"
    source = describe_source(ckpt)
    assert source["step"] == 3 and source["weights_file"] == "model.pt"
    assert source["checkpoint_manifest_sha256"] == hashlib.sha256((ckpt / "manifest.json").read_bytes()).hexdigest()


def test_a_time_conditioned_model_takes_t(tmp_path: Path) -> None:
    final = final_export(tmp_path / "adaln", ["model.time_conditioning=adaln"], condition_on_time)
    out = tmp_path / "bundle"
    settings = ExportConfig(checkpoint=str(final), output=str(out), batch=2, length=8, target="generic")
    m = export_bundle(settings).manifest
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "t"] and m["inputs"][1]["shape"] == [2]
    assert m["parity"]["fp16_compute"]["gated"] is False

    model, cfg, _ = load_model(final)
    inputs = sample_inputs(cfg.model, 2, 8, seed=5)
    later = {**inputs, "t": torch.tensor([0.9, 0.95])}
    with torch.no_grad():
        eager, eager_later = Denoiser(model)(*inputs.values()), Denoiser(model)(*later.values())
    assert compare(eager, eager_later).max_abs_diff > 1e-2, "the logits depend on t"
    for run_artifact, path in ((run_program, out / PROGRAM), (run_onnx, out / ONNX)):
        assert compare(eager, run_artifact(path, inputs)).max_abs_diff < 1e-4
        assert compare(eager_later, run_artifact(path, later)).max_abs_diff < 1e-4, "t is an input, not a constant"


def test_a_model_that_breaks_in_fp16_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    final = final_export(tmp_path / "big", [], beyond_fp16)
    parent = tmp_path / "out"
    with pytest.raises(ParityError, match=r"(?s)fp16 weights: .*finite NOT ok.*beyond fp16's range.*norm\.weight"):
        export_bundle(ExportConfig(checkpoint=str(final), output=str(parent / "b"), length=8))
    assert not (parent / "b").exists() and _leftovers(parent) == []


def test_a_length_beyond_the_context_is_refused_before_writing(run: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"export\.length \(33\) exceeds the model's context_length \(32\)"):
        export_bundle(ExportConfig(checkpoint=str(run), output=str(tmp_path / "b"), length=33))
    assert list(tmp_path.iterdir()) == []
