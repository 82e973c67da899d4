"""The training loop: one process's view of a run, single device or one rank of DDP.

Public API: `Trainer(cfg, parallel, resume)` prepares the run directory; `build()` makes the tokenizer,
model (its family from the registry, with the resolved kernel policy), objective, optimizer and data
stream; `step()` runs one optimizer step and returns its `StepStats`; `validate()`; `state_dict()` /
`load_state_dict()` over the explicit training state that checkpoints hold; `fit()` runs the whole loop.
Everything that differs between one process and many goes through `self.parallel` (see parallel.py);
everything about batches goes through the data stream's iterator and state_dict. The model and the loss
come only through the registry's builders, so a new family or objective needs nothing here.
"""

from __future__ import annotations

import collections
import gc
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from config import config_to_toml
from config.schema import Config
from diffusionlm.device import resolve_precision, select_device
from diffusionlm.diffusion import build_objective
from diffusionlm.models import build_model
from diffusionlm.ops import KernelUnavailable, resolve_kernels
from diffusionlm.training import checkpoint as ckpt
from diffusionlm.training import preflight
from diffusionlm.training.checkpoint import CheckpointError, CheckpointWriteError
from diffusionlm.training.errors import TrainingError
from diffusionlm.training.export import export_final
from diffusionlm.training.norms import ActivationNorms, weight_norms
from diffusionlm.training.optim import group_names, make_scheduler
from diffusionlm.training.optimizer_step import OptimizerStep, crossed
from diffusionlm.training.parallel import SingleProcess
from diffusionlm.training.rng import capture_rng_state, restore_rng_state, seed_everything
from diffusionlm.training.run_dir import RunDir, default_run_name, truncate_metrics_after
from diffusionlm.training.sampling import write_samples
from diffusionlm.training.step import StepStats
from diffusionlm.training.stopping import StopRequests
from diffusionlm.training.trainer_checkpoint import (
    load_trainer_checkpoint,
    resume_conflicts,
    save_trainer_checkpoint,
)

MAX_FAILED_SAVES = 2  # checkpoint saves failing in a row before the run stops


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    interrupted: bool
    last_val_nelbo: float | None
    losses: list[tuple[int, float]]


class Trainer(OptimizerStep):
    def __init__(self, cfg: Config, parallel: SingleProcess | None = None, resume: str | None = None):
        self.cfg = cfg.model_copy(deep=True)  # build() records the resolved kernels in it
        self.parallel = parallel or SingleProcess()
        self.resume = resume if resume is not None else cfg.checkpoint.resume
        self.device = getattr(self.parallel, "device", None) or select_device(cfg.model.device)
        self.precision = resolve_precision(cfg.training.precision, self.device)
        self.micro_step = 0
        self.bad_steps = 0
        self.stop = StopRequests(self.parallel.world_size, lambda message: self.logger.info(message))
        self._steps_taken = 0  # by this process (not restored on resume)
        self._failed_saves = 0  # checkpoint saves that failed in a row
        self.built = False
        self._setup_run_dir()

    # ---------------------------------------------------------------- setup
    def _setup_run_dir(self) -> None:
        """Name the run, pick (and verify) the checkpoint to resume, refuse a resume that would change the run's
        settings or tokenizer, and make sure the run directory can be written: all before anything is written.
        Rank 0 decides; every rank raises the same TrainingError."""
        cfg, par = self.cfg, self.parallel
        name = par.broadcast_object(cfg.logging.run_name or default_run_name(cfg) if par.is_main else None)
        self.run = RunDir(Path(cfg.logging.output_dir) / name)
        self.run_name = name
        if self.resume == "auto" and cfg.logging.run_name is None:
            raise TrainingError("--resume auto needs a fixed logging.run_name (e.g. --set logging.run_name=myrun)")
        found = par.broadcast_object(
            preflight.choose_checkpoint(self.resume, self.run, par.world_size, self._warn) if par.is_main else None)
        if isinstance(found, str):
            raise TrainingError(found)
        self.resume_from = found
        if self.resume_from is None and ckpt.latest_checkpoint(self.run.checkpoints) is not None:
            raise TrainingError(
                f"run directory {self.run.root} already has checkpoints; pass --resume auto to continue it "
                "or choose another logging.run_name"
            )
        if self.resume_from is not None and self.resume_from.parent.parent != self.run.root:
            # resuming from an explicit path continues that run, in its own directory
            self.run = RunDir(self.resume_from.parent.parent)
            self.run_name = self.run.root.name
        if self.resume_from is not None:
            problem = par.broadcast_object(self._resume_conflicts() if par.is_main else None)
            if problem:
                raise TrainingError(problem)
        problem = par.broadcast_object(preflight.unwritable(self.run) if par.is_main else None)
        if problem:
            raise TrainingError(problem)

    def _resume_conflicts(self) -> str | None:
        try:
            return resume_conflicts(self, self.resume_from)
        except CheckpointError as e:
            return str(e)

    def _warn(self, message: str) -> None:
        """A warning the user must see whatever the logging backend: stderr, once (rank 0)."""
        if self.parallel.is_main:
            print(message, file=sys.stderr, flush=True)

    def build(self) -> None:
        """Make everything a run needs, and restore the checkpoint being resumed; called once by `fit()`."""
        if self.built:
            return
        from diffusionlm.data import build_stream, iter_texts
        from diffusionlm.tokenizer import build_tokenizer, check_tokenizer, load_tokenizer, save_tokenizer
        from logger import build_logger
        from profiling import Profiler

        cfg, par = self.cfg, self.parallel
        try:
            self.kernels = resolve_kernels(cfg.kernels, self.device)
        except KernelUnavailable as e:
            raise TrainingError(str(e)) from None
        cfg.kernels.resolved = self.kernels.record()
        if self.resume_from is not None and par.is_main:
            # Steps after the checkpoint were logged by the run that stopped and will be logged again.
            truncate_metrics_after(self.run.metrics, ckpt.read_meta(self.resume_from)["step"])
        self.logger = build_logger(cfg.logging, cfg.wandb, self.run.root, rank=par.rank, run_name=self.run_name)
        # The tokenizer is part of the run: train or load it once (rank 0), everyone reads the run's copy.
        if par.is_main and not self.run.tokenizer.is_file():
            if self.resume_from is not None:  # never a new tokenizer for trained weights: the checkpoint's own
                shutil.copyfile(self.resume_from / "tokenizer.json", self.run.tokenizer)
                self._warn(f"warning: {self.run.tokenizer} was missing: restored the checkpoint's copy")
            else:
                save_tokenizer(build_tokenizer(cfg, iter_texts(cfg, "train"), show_progress=False),
                               self.run.tokenizer)
        par.barrier()
        self.tokenizer = load_tokenizer(self.run.tokenizer)
        check_tokenizer(self.tokenizer, cfg.model)
        if par.is_main:
            self.run.config.write_text(config_to_toml(cfg))
            self.logger.log_config(cfg.model_dump(mode="json"))

        seed_everything(cfg.training.seed)  # identical initial weights on every rank
        self.raw_model = build_model(cfg.model, self.kernels).to(self.device)
        try:
            self.objective = build_objective(cfg)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        self.model = par.wrap_model(self.raw_model)
        # The objective picks its path (on CUDA, MDLM's loss runs as one compiled graph; CPUs keep the reference).
        self.loss = self.objective.training_loss(self.model, self.device, cfg.training.compile, self.kernels)
        self.optimizer, self.groups = par.build_optimizer(self.raw_model, cfg.optimizer, compiled=cfg.training.compile)
        self.group_names = group_names(self.groups)
        self.total_opt_steps = cfg.training.max_train_iteration // cfg.training.grad_accum_steps
        warmup_opt_steps = math.ceil(cfg.optimizer.warmup_iteration / cfg.training.grad_accum_steps)
        self.scheduler = make_scheduler(self.optimizer, cfg.optimizer, self.total_opt_steps, warmup_opt_steps)
        self.scaler = self.precision.grad_scaler()
        self.defer_stats = self._use_deferred_stats()
        self._unsettled: StepStats | None = None
        # Per-rank randomness (masks, times) differs across ranks; weights do not.
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.training.seed * 1000 + par.rank + 1)
        self.stream = build_stream(cfg, self.tokenizer, "train", rank=par.rank, world_size=par.world_size)
        self.profiler = Profiler(cfg.profiling, self.run.root, self.device)
        self.profiler.instrument_module(self.raw_model, level="fine")
        self.act_norms = None
        if cfg.logging.log_activation_norms:
            blocks = getattr(self.raw_model, "blocks", None)
            if blocks is None:
                raise TrainingError(f"logging.log_activation_norms: model family {cfg.model.family!r} has no "
                                    "`blocks` to record")
            self.act_norms = ActivationNorms(blocks)
        self.built = True
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)
        verdict = par.broadcast_object(preflight.disk_space(self.raw_model, self.run, cfg.checkpoint.keep_last,
                                                            par.world_size) if par.is_main else None)
        if verdict is not None and verdict[0] == "refuse":
            raise TrainingError(verdict[1])
        if verdict is not None:
            self._warn(verdict[1])
        self._announce()

    def _announce(self) -> None:
        cfg, par = self.cfg, self.parallel
        n_all, n_body = self.raw_model.num_params(), self.raw_model.num_params(include_embeddings=False)
        global_batch = cfg.data.batch_size * cfg.training.grad_accum_steps * par.world_size
        self.logger.info(
            f"run {self.run_name} in {self.run.root} | device {self.device} ({self.precision.name}) | "
            f"world size {par.world_size} | params {n_all / 1e6:.2f}M ({n_body / 1e6:.2f}M without embeddings) | "
            f"global batch {global_batch} sequences x {cfg.model.context_length} tokens | kernels: triton "
            f"{self.kernels.triton}, attention {self.kernels.attention}, mlp {self.kernels.mlp}"
            + (f" | resumed from {self.resume_from} at step {self.micro_step}" if self.resume_from else "")
        )
        self.logger.info(f"data: {self.stream.describe()}")
        if cfg.optimizer.warmup_iteration > cfg.training.max_train_iteration:
            self.logger.info(f"warning: optimizer.warmup_iteration ({cfg.optimizer.warmup_iteration}) exceeds "
                             f"training.max_train_iteration ({cfg.training.max_train_iteration}): the learning rate "
                             "never reaches optimizer.lr in this run")

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """This rank's training state, except the optimizer's (which `parallel` saves: sharded under DDP):
        model weights, step counters, LR scheduler, loss scaler, every RNG and the data-stream position."""
        return {
            "model": self.raw_model.state_dict(),
            "counters": {"micro_step": self.micro_step, "bad_steps": self.bad_steps},
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng_state(self.generator),
            "data": self.stream.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict()` returned; "rng" and "data" may be absent (then they restart)."""
        self.raw_model.load_state_dict(state["model"])
        self.micro_step = state["counters"]["micro_step"]
        self.bad_steps = state["counters"]["bad_steps"]
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        if state.get("rng") is not None:
            restore_rng_state(state["rng"], self.generator)
        if state.get("data") is not None:
            self.stream.load_state_dict(state["data"])

    def save_checkpoint(self, final: bool = False) -> Path | None:
        """Save a checkpoint; returns its path, or None when it could not be written and the run may go on.

        A failed write (disk full, read-only, no permission) leaves nothing partial behind. The run goes on with
        a warning, since a later save may succeed, unless this is the `final` save (of the run's last or
        interrupted step) or the saves before it failed too (`MAX_FAILED_SAVES` in a row): then TrainingError."""
        try:
            path = save_trainer_checkpoint(self)
        except CheckpointWriteError as e:
            self._failed_saves += 1
            newest = ckpt.latest_checkpoint(self.run.checkpoints)
            keep = f"The newest checkpoint on disk is {newest}" if newest else "No checkpoint of this run is on disk"
            if final:
                raise TrainingError(f"the final checkpoint (step {self.micro_step}) could not be saved: {e}. {keep}"
                                    ) from None
            if self._failed_saves >= MAX_FAILED_SAVES:
                raise TrainingError(f"checkpoint saves keep failing ({self._failed_saves} in a row), stopping at "
                                    f"step {self.micro_step}: {e}. {keep}") from None
            self._warn(f"warning: {e}. Training goes on and saves again at the next checkpoint; the run stops if "
                       f"{MAX_FAILED_SAVES - self._failed_saves} more save(s) in a row fail")
            return None
        self._failed_saves = 0
        return path

    def write_samples(self) -> list[str]:
        """Unprompted samples of the model as it is now, to `samples/step_<N>.txt` (rank 0's job)."""
        out = self.run.samples / f"step_{self.micro_step}.txt"
        texts = write_samples(self.raw_model, self.tokenizer, self.cfg, self.device, self.precision, out)
        self.logger.info(f"sample at step {self.micro_step}: {texts[0][:300]!r}" if texts else "no samples")
        return texts

    def _load_checkpoint(self, path: Path) -> None:
        try:
            load_trainer_checkpoint(self, path)
        except CheckpointError as e:
            raise TrainingError(str(e)) from None

    # ---------------------------------------------------------------- steps
    def step(self) -> StepStats:
        """One optimizer step (`grad_accum_steps` micro-steps); advances `micro_step`.

        Returns the step's statistics. They are read at once, or, with deferred statistics (CUDA, fused
        AdamW), when first accessed: reading them then waits for this step only, not for work queued after it.
        """
        if not self.built:
            raise RuntimeError("Trainer.step() before build()")
        accum = self.cfg.training.grad_accum_steps
        for s in range(self.micro_step, self.micro_step + accum):
            self.profiler.step(s)
        with self.profiler.range("train_step"):
            stats = self._run_step()
        self.micro_step += accum
        return stats

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        from diffusionlm.data import build_stream

        cfg, par = self.cfg, self.parallel
        self.raw_model.eval()
        # A fixed generator: every validation scores the same masks, so the curve shows the model, not noise.
        gen = torch.Generator(device=self.device).manual_seed(cfg.training.seed * 1000 + 777 + par.rank)
        stream = build_stream(cfg, self.tokenizer, "val", rank=par.rank, world_size=par.world_size)
        sums = torch.zeros(5, device=self.device)  # weighted nll, real tokens, masked ce sum, correct, masked
        try:
            with self.profiler.range("eval"):
                for _ in range(cfg.training.max_val_iteration):
                    batch = {k: v.to(self.device) for k, v in next(stream).items()}
                    with self.precision.autocast():
                        loss, m = self.objective(self.raw_model, batch, gen, normalizer=1.0)
                    n = m["num_masked"].float()
                    sums += torch.stack([loss.float(), self.objective.real_tokens(batch).sum().float(),
                                         m["masked_ce"] * n, m["masked_acc"] * n, n])
        finally:
            stream.close()
        nll, tokens, ce, correct, masked = par.all_reduce_sum(sums).tolist()
        self.raw_model.train()
        return {
            "val.nelbo": nll / max(tokens, 1.0),
            "val.masked_ce": ce / max(masked, 1.0),
            "val.masked_acc": correct / max(masked, 1.0),
            "val.tokens": tokens,
        }

    # ---------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        self.build()
        cfg, par = self.cfg, self.parallel
        from logger.progress import make_progress

        progress = make_progress(cfg.training.max_train_iteration, cfg.logging.progress_bar if par.is_main else "off",
                                 start=self.micro_step)
        losses: list[tuple[int, float]] = []
        last_val: float | None = None
        self.stop.install()
        window_t0, window_tokens = time.perf_counter(), 0.0
        saved_at = -1
        unread: collections.deque[StepStats] = collections.deque()  # step stats not yet read (deferred on CUDA)
        try:
            while self.micro_step < cfg.training.max_train_iteration and self.stop.agreed is None:
                prev = self.micro_step
                stats = self.step()
                unread.append(stats)
                # A deferred step is read once the GPU has finished it, or at once where the loop needs it
                # (logging, validation, samples, checkpoints, the end): never a wait in the middle of a stretch.
                needed = (self.stop.agreed is not None or self.micro_step >= cfg.training.max_train_iteration
                          or any(crossed(prev, self.micro_step, every) for every in (
                              cfg.training.log_freq_iteration, cfg.training.val_freq_iteration,
                              cfg.training.sample_freq_iteration or 10**18, cfg.checkpoint.save_freq_iteration)))
                if needed and self.defer_stats:
                    self._settle_stats()
                while unread and (needed or unread[0].ready):
                    done = unread.popleft()
                    step_of = done.step
                    window_tokens += done["metrics.tokens"]
                    losses.append((step_of, done["metrics.loss"]))
                    progress.update(step_of, loss=done["metrics.loss"])
                if crossed(prev, self.micro_step, cfg.training.log_freq_iteration) or \
                        self.micro_step >= cfg.training.max_train_iteration:
                    stats = dict(stats)
                    elapsed = time.perf_counter() - window_t0
                    stats["metrics.tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                    window_t0, window_tokens = time.perf_counter(), 0.0
                    self._log_train(stats)
                if not cfg.training.skip_validation and (
                        crossed(prev, self.micro_step, cfg.training.val_freq_iteration)
                        or self.micro_step >= cfg.training.max_train_iteration):
                    val = self.validate()
                    last_val = val["val.nelbo"]
                    self.logger.log(val, step=self.micro_step)
                if cfg.training.sample_freq_iteration and par.is_main and crossed(
                        prev, self.micro_step, cfg.training.sample_freq_iteration):
                    self.write_samples()
                if crossed(prev, self.micro_step, cfg.checkpoint.save_freq_iteration) and \
                        self.save_checkpoint() is not None:
                    saved_at = self.micro_step
            interrupted = self.stop.agreed is not None
            if saved_at != self.micro_step:
                self.save_checkpoint(final=True)
            if not interrupted:
                par.settle_parameters(self.optimizer)
                failed = None
                if par.is_main:
                    try:
                        export_final(self.raw_model, cfg, self.run.tokenizer, self.run.final)
                    except OSError as e:  # every rank stops with it (the broadcast is the barrier)
                        failed = (f"could not write the final export to {self.run.final}: {e}; the checkpoint of "
                                  f"step {self.micro_step} is saved")
                    if failed is None and cfg.training.num_samples > 0:
                        self.write_samples()
                failed = par.broadcast_object(failed)
                if failed:
                    raise TrainingError(failed)
        finally:
            progress.close()
            self.stop.restore()
            self.close()
        return TrainResult(self.run.root, self.micro_step, interrupted, last_val, losses)

    def close(self) -> None:
        """Release the data workers, profiler and logger, and let the collector see this trainer again: the
        objects frozen after the first step include reference cycles through it, which would otherwise keep
        its model and optimizer state (and their GPU memory) alive after the last reference is gone."""
        gc.unfreeze()
        self.profiler.close()
        self.stream.close()
        self.logger.finish()

    def _log_train(self, stats: dict[str, float]) -> None:
        metrics = dict(stats)
        metrics["metrics.lr"] = self.optimizer.param_groups[0]["lr"]
        for name, group in zip(self.group_names, self.optimizer.param_groups):
            metrics[f"metrics.lr/{name}"] = group["lr"]
        metrics.update({k: float(v) for k, v in self.stream.stats().items()})
        if self.act_norms is not None:
            metrics.update(self.act_norms.collect())
        if self.cfg.logging.log_weight_norms:
            self.parallel.settle_parameters(self.optimizer)
            metrics.update(weight_norms(self.raw_model))
        metrics.pop("metrics.tokens", None)
        self.logger.log(metrics, step=self.micro_step)
