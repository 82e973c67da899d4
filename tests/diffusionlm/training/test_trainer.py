"""The trainer end to end, in process: real data, real tokenizer, real checkpoints."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from config import load_config
from diffusionlm.inference import load_model
from diffusionlm.training import Trainer, TrainingDiverged, TrainingError
from tests.diffusionlm.training.conftest import TINY


def _cfg(tmp_path: Path, *extra: str):
    return load_config(None, [*TINY, f"logging.output_dir={json.dumps(str(tmp_path / 'runs'))}", *extra])


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_fifty_steps_on_tinystories_lower_the_validation_elbo(tmp_path: Path, tinystories_path: Path) -> None:
    cfg = _cfg(tmp_path, "data.source=files", f"data.data_files=[{json.dumps(str(tinystories_path))}]",
               "training.max_train_iteration=50", "training.val_freq_iteration=5", "training.max_val_iteration=4",
               "optimizer.lr=3e-3", "checkpoint.save_freq_iteration=50", "logging.run_name=ts")
    result = Trainer(cfg).fit()
    vals = [m["val.nelbo"] for m in _metrics(result.run_dir) if "val.nelbo" in m]
    assert len(vals) == 10
    assert vals[-1] < vals[0] - 0.5, vals
    assert result.last_val_nelbo == pytest.approx(vals[-1], rel=1e-4)
    losses = [loss for _, loss in result.losses]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10
    # the run directory contract
    for rel in ("config.toml", "tokenizer.json", "metrics.jsonl", "checkpoints/step_50/meta.json",
                "final/model.safetensors", "final/config.json", "final/tokenizer.json", "samples/step_50.txt"):
        assert (result.run_dir / rel).exists(), rel


def test_checkpoint_round_trip_and_export_match_the_trained_model(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "training.max_train_iteration=6", "checkpoint.save_freq_iteration=3",
               "training.skip_validation=true", "training.num_samples=0", "logging.run_name=rt")
    trainer = Trainer(cfg)
    result = trainer.fit()
    state = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    for where in (result.run_dir / "final", result.run_dir / "checkpoints" / "step_6", result.run_dir):
        model, run_cfg, tok = load_model(where)
        assert run_cfg.model == cfg.model and tok.name == "tokenizer.json"
        for k, v in model.state_dict().items():
            assert torch.equal(v, state[k]), (where, k)
    assert [d.name for d in (result.run_dir / "checkpoints").iterdir()] == ["step_3", "step_6"] or \
        sorted(d.name for d in (result.run_dir / "checkpoints").iterdir()) == ["step_3", "step_6"]


def test_sigterm_checkpoints_and_resume_continues_exactly(tmp_path: Path) -> None:
    base = ["training.skip_validation=true", "training.num_samples=0", "checkpoint.save_freq_iteration=100",
            "training.max_train_iteration=8", "training.grad_accum_steps=2", "data.packing=false",
            "data.random_trunc_prob=0.3"]
    full_trainer = Trainer(_cfg(tmp_path, *base, "logging.run_name=full"))
    full = full_trainer.fit()

    cut = Trainer(_cfg(tmp_path, *base, "logging.run_name=cut"))
    real_step = cut.step

    def step_then_signal():
        stats = real_step()
        if cut.micro_step == 4:  # one process agrees to stop at once: the run stops after this step
            os.kill(os.getpid(), signal.SIGTERM)
        return stats

    cut.step = step_then_signal
    interrupted = cut.fit()
    assert interrupted.interrupted and interrupted.step == 4
    assert (interrupted.run_dir / "checkpoints" / "step_4" / "meta.json").is_file()
    assert not (interrupted.run_dir / "final").exists()

    resumed_trainer = Trainer(_cfg(tmp_path, *base, "logging.run_name=cut"), resume="auto")
    resumed = resumed_trainer.fit()
    assert resumed.step == 8 and not resumed.interrupted
    assert [loss for s, loss in full.losses if s > 4] == [loss for _, loss in resumed.losses]
    resumed_state = resumed_trainer.raw_model.state_dict()
    for name, a in full_trainer.raw_model.state_dict().items():
        assert torch.equal(a, resumed_state[name]), name


def test_refuses_to_overwrite_a_run_and_needs_a_name_for_auto(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "training.max_train_iteration=2", "training.skip_validation=true",
               "training.num_samples=0", "logging.run_name=taken")
    Trainer(cfg).fit()
    with pytest.raises(TrainingError, match="already has checkpoints"):
        Trainer(cfg)
    with pytest.raises(TrainingError, match=r"needs a fixed logging\.run_name"):
        Trainer(_cfg(tmp_path), resume="auto")


@pytest.mark.parametrize("extra", [[], ["optimizer.optimizer_name=adamw", "optimizer.fused=on",
                                          "training.deferred_stats=on"]], ids=["at-once", "deferred"])
def test_non_finite_losses_skip_then_abort(tmp_path: Path, extra: list[str]) -> None:
    cfg = _cfg(tmp_path, "training.max_train_iteration=20", "training.skip_validation=true",
               "training.num_samples=0", "training.max_consecutive_bad_steps=3", "logging.run_name=bad",
               "logging.backend=console", *extra)
    trainer = Trainer(cfg)
    trainer.build()
    assert trainer.defer_stats == bool(extra)  # the deferred path: skipped on the device via found_inf
    with torch.no_grad():
        trainer.raw_model.blocks[0].mlp.down.weight.fill_(float("nan"))
    before = trainer.raw_model.embed.weight.detach().clone()
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        trainer.fit()
    assert torch.equal(trainer.raw_model.embed.weight, before), "skipped steps must not update weights"


def test_muon_run_logs_group_lrs_and_norms_to_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _cfg(tmp_path, "optimizer.optimizer_name=muon", "training.max_train_iteration=4",
               "training.grad_accum_steps=2", "training.skip_validation=true", "training.num_samples=0",
               "logging.log_activation_norms=true", "logging.log_weight_norms=true", "logging.backend=wandb",
               "wandb.mode=offline", "logging.run_name=muon")
    result = Trainer(cfg).fit()
    records = [m for m in _metrics(result.run_dir) if "metrics.loss" in m]
    assert [r["step"] for r in records] == [2, 4]
    last = records[-1]
    for key in ("metrics.lr/hidden", "metrics.lr/embed", "metrics.lr/scalar", "metrics.act_rms/block0",
                "metrics.weight_norm/blocks.0.attn.qkv.weight", "metrics.grad_l2_norm", "metrics.tokens_per_s"):
        assert key in last, key
    assert last["metrics.lr/hidden"] > last["metrics.lr/embed"]
    assert list(result.run_dir.rglob("*.wandb")), "an offline wandb run was written"


def test_profiling_on_leaves_losses_unchanged_and_writes_the_window_trace(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["training.max_train_iteration=6", "training.skip_validation=true", "training.num_samples=0"]
    plain = Trainer(_cfg(tmp_path, *base, "logging.run_name=plain")).fit()
    monkeypatch.setenv("DIFFUSIONLM_NVTX", "1")
    monkeypatch.setenv("DIFFUSIONLM_NVTX_LEVEL", "fine")
    traced_trainer = Trainer(_cfg(tmp_path, *base, "logging.run_name=traced", "profiling.start_step=2",
                                  "profiling.stop_step=4", "profiling.torch_trace=true"))
    traced = traced_trainer.fit()
    assert [loss for _, loss in traced.losses] == [loss for _, loss in plain.losses]
    assert traced_trainer.profiler.window_events == [("start", 2), ("stop", 4)]
    trace = json.loads((traced.run_dir / "profile" / "trace_step2-4.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"train_step", "forward", "backward", "optimizer_step"} <= names


def test_deferred_statistics_on_needs_fused_adamw(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "optimizer.optimizer_name=muon", "training.deferred_stats=on", "logging.run_name=m")
    with pytest.raises(TrainingError, match="deferred_stats = 'on' needs fused AdamW"):
        Trainer(cfg).build()


def test_collector_is_frozen_after_the_first_step_and_released_after_fit(tmp_path: Path) -> None:
    import gc
    import weakref

    cfg = _cfg(tmp_path, "training.max_train_iteration=3", "training.skip_validation=true",
               "training.num_samples=0", "logging.run_name=gc")
    trainer = Trainer(cfg)
    trainer.build()
    trainer.step()
    assert gc.get_freeze_count() == 0  # the first step still builds long-lived objects
    trainer.step()
    assert gc.get_freeze_count() > 0
    model = weakref.ref(trainer.raw_model)
    trainer.close()
    del trainer
    gc.collect()
    assert model() is None, "a closed trainer's model must be collectable (its cycles are no longer frozen)"
    trainer = Trainer(_cfg(tmp_path, "training.max_train_iteration=3", "training.skip_validation=true",
                           "training.num_samples=0", "logging.run_name=gc2"))
    trainer.fit()
    assert gc.get_freeze_count() == 0  # what a run leaves behind is collectable again


def test_gradient_clipping_through_fused_adamw_matches_clip_grad_norm(tmp_path: Path) -> None:
    # Fused AdamW takes the clip factor as its grad_scale instead of a pass over the gradients; a tight clip
    # (every step clipped) must give the run that torch's clip_grad_norm_ + unfused AdamW gives.
    common = ("training.max_train_iteration=5", "training.skip_validation=true", "training.num_samples=0",
              "training.precision=fp32", "optimizer.optimizer_name=adamw", "optimizer.grad_clip=0.05",
              "checkpoint.save_freq_iteration=1000")
    runs = {}
    for fused in ("on", "off"):
        trainer = Trainer(_cfg(tmp_path, *common, f"optimizer.fused={fused}", f"logging.run_name=clip-{fused}"))
        runs[fused] = (trainer.fit().losses, trainer.raw_model.state_dict())
        assert trainer.parallel.skips_on_device(trainer.optimizer) == (fused == "on")
        if fused == "on":
            assert float(trainer.optimizer.grad_scale) > 1.0, "the clip was active"
    (losses_on, state_on), (losses_off, state_off) = runs["on"], runs["off"]
    assert [s for s, _ in losses_on] == [s for s, _ in losses_off]
    for (_, a), (_, b) in zip(losses_on, losses_off):
        assert a == pytest.approx(b, rel=1e-5)
    for name, value in state_off.items():
        torch.testing.assert_close(state_on[name], value, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", ["reference", "masked_rows"])
def test_activation_norms_keep_the_loss_path_and_its_numbers(tmp_path: Path, path: str) -> None:
    """Logging activation norms hooks the blocks; it must not change which loss path runs or what it computes."""
    base = ["training.max_train_iteration=3", "training.skip_validation=true", "training.num_samples=0",
            f"objective.loss_path={path}"]
    plain = Trainer(_cfg(tmp_path, *base, f"logging.run_name=plain-{path}"))
    plain_losses = plain.fit().losses
    logged = Trainer(_cfg(tmp_path, *base, f"logging.run_name=norms-{path}", "logging.log_activation_norms=true"))
    result = logged.fit()
    assert type(logged.loss) is type(plain.loss)
    assert logged.objective.uses_masked_rows(logged.device) is (path == "masked_rows")
    assert result.losses == plain_losses
    assert all("metrics.act_rms/block1" in m for m in _metrics(result.run_dir) if "metrics.loss" in m)


def test_the_resolved_kernel_policy_is_recorded_in_the_run_and_its_checkpoints(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "training.max_train_iteration=2", "training.skip_validation=true",
               "training.num_samples=0", "logging.run_name=kern", "kernels.mlp=pytorch", "kernels.csrc=off")
    result = Trainer(cfg).fit()
    for where in (result.run_dir / "config.toml", result.run_dir / "checkpoints" / "step_2" / "config.toml"):
        saved = load_config(where, environ={})
        assert saved.kernels.mlp == "pytorch"
        assert saved.kernels.resolved == {"triton": "off", "attention": "sdpa", "mlp": "pytorch",
                                          "fa4_min_scores": 1 << 27, "quack_min_gate_up": 150_000_000,
                                          "csrc": "off"}


def test_a_kernel_that_cannot_run_here_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"kernels\.attention = 'fa4' needs a Hopper GPU"):
        Trainer(_cfg(tmp_path, "kernels.attention=fa4", "logging.run_name=fa4")).build()


def test_a_warmup_longer_than_the_run_is_said_at_start(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _cfg(tmp_path, "training.max_train_iteration=2", "optimizer.warmup_iteration=50",
               "training.skip_validation=true", "training.num_samples=0", "logging.run_name=warm",
               "logging.backend=console")
    Trainer(cfg).fit()
    out = capsys.readouterr()
    assert "optimizer.warmup_iteration (50) exceeds training.max_train_iteration (2)" in out.out + out.err
