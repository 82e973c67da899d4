"""The training loop: one process's view of a run, single device or one rank of DDP.

Everything that differs between one process and many goes through `self.parallel` (see parallel.py);
everything about batches goes through the data stream's iterator and state_dict.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from config import config_to_toml
from config.schema import Config
from diffusionlm.diffusion import MDLMObjective
from diffusionlm.models import DiffusionTransformer
from diffusionlm.training import checkpoint as ckpt
from diffusionlm.training.checkpoint import CheckpointError
from diffusionlm.training.export import export_final
from diffusionlm.training.norms import ActivationNorms, weight_norms
from diffusionlm.training.optim import group_names, make_scheduler
from diffusionlm.training.parallel import SingleProcess
from diffusionlm.training.precision import resolve_precision, select_device
from diffusionlm.training.rng import seed_everything
from diffusionlm.training.run_dir import RunDir, default_run_name, truncate_metrics_after
from diffusionlm.training.sampling import write_samples
from diffusionlm.training.step import DeferredStats
from diffusionlm.training.stopping import StopRequests
from diffusionlm.training.trainer_checkpoint import load_trainer_checkpoint, save_trainer_checkpoint


class TrainingError(RuntimeError):
    """A run that cannot start or go on; the message is for the user."""


class TrainingDiverged(TrainingError):
    pass


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    interrupted: bool
    last_val_nelbo: float | None
    losses: list[tuple[int, float]]


def _crossed(prev: int, now: int, every: int) -> bool:
    return now // every > prev // every


class Trainer:
    def __init__(self, cfg: Config, parallel: SingleProcess | None = None, resume: str | None = None):
        self.cfg = cfg
        self.parallel = parallel or SingleProcess()
        self.resume = resume if resume is not None else cfg.checkpoint.resume
        self.device = getattr(self.parallel, "device", None) or select_device(cfg.model.device)
        self.precision = resolve_precision(cfg.training.precision, self.device)
        self.micro_step = 0
        self.bad_steps = 0
        self.stop = StopRequests(self.parallel.world_size, lambda message: self.logger.info(message))
        self._steps_taken = 0  # by this process (not restored on resume)
        self._setup_run_dir()

    # ---------------------------------------------------------------- setup
    def _setup_run_dir(self) -> None:
        cfg, par = self.cfg, self.parallel
        name = par.broadcast_object(cfg.logging.run_name or default_run_name(cfg) if par.is_main else None)
        self.run = RunDir(Path(cfg.logging.output_dir) / name)
        self.run_name = name
        if self.resume == "auto" and cfg.logging.run_name is None:
            raise TrainingError("--resume auto needs a fixed logging.run_name (e.g. --set logging.run_name=myrun)")
        try:
            self.resume_from = ckpt.resolve_resume(self.resume, self.run.checkpoints)
        except ckpt.CheckpointError as e:
            raise TrainingError(str(e)) from None
        if self.resume_from is None and ckpt.latest_checkpoint(self.run.checkpoints) is not None:
            raise TrainingError(
                f"run directory {self.run.root} already has checkpoints; pass --resume auto to continue it "
                "or choose another logging.run_name"
            )
        if self.resume_from is not None and self.resume_from.parent.parent != self.run.root:
            # resuming from an explicit path continues that run, in its own directory
            self.run = RunDir(self.resume_from.parent.parent)
            self.run_name = self.run.root.name
        if par.is_main:
            self.run.root.mkdir(parents=True, exist_ok=True)
        par.barrier()

    def _build(self) -> None:
        from diffusionlm.data import build_stream
        from diffusionlm.tokenizer import build_tokenizer, check_tokenizer, load_tokenizer, save_tokenizer
        from diffusionlm.training.step import CompiledMaskedLoss
        from logger import build_logger
        from profiling import Profiler

        cfg, par = self.cfg, self.parallel
        if self.resume_from is not None and par.is_main:
            # Steps after the checkpoint were logged by the run that stopped and will be logged again.
            truncate_metrics_after(self.run.metrics, ckpt.read_meta(self.resume_from)["step"])
        self.logger = build_logger(cfg.logging, cfg.wandb, self.run.root, rank=par.rank, run_name=self.run_name)
        # The tokenizer is part of the run: train or load it once (rank 0), everyone reads the run's copy.
        if par.is_main and not self.run.tokenizer.is_file():
            save_tokenizer(build_tokenizer(cfg, show_progress=False), self.run.tokenizer)
        par.barrier()
        self.tokenizer = load_tokenizer(self.run.tokenizer)
        check_tokenizer(self.tokenizer, cfg.model)
        if par.is_main:
            self.run.config.write_text(config_to_toml(cfg))
            self.logger.log_config(cfg.model_dump(mode="json"))

        seed_everything(cfg.training.seed)  # identical initial weights on every rank
        self.raw_model = DiffusionTransformer(cfg.model).to(self.device)
        self.objective = MDLMObjective.from_config(cfg.diffusion, cfg.model.mask_token_id, cfg.model.pad_token_id)
        # On CUDA the loss runs as one compiled graph (step.py); CPU keeps the objective's exact kernels.
        fused_loss = (self.device.type == "cuda" and self.objective.masked_only_logits
                      and not cfg.logging.log_activation_norms)
        compile_model = cfg.training.compile and not fused_loss
        self.model = par.wrap_model(torch.compile(self.raw_model) if compile_model else self.raw_model)
        self.loss_step = CompiledMaskedLoss(self.objective, self.model, cfg.training.compile) if fused_loss else None
        self.optimizer, self.groups = par.build_optimizer(self.raw_model, cfg.optimizer, compiled=cfg.training.compile)
        self.group_names = group_names(self.groups)
        self.total_opt_steps = cfg.training.max_train_iteration // cfg.training.grad_accum_steps
        self.scheduler = make_scheduler(self.optimizer, cfg.optimizer, self.total_opt_steps)
        self.scaler = self.precision.grad_scaler()
        self.defer_stats = self._use_deferred_stats()
        self._unsettled: DeferredStats | None = None
        # Per-rank randomness (masks, times) differs across ranks; weights do not.
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.training.seed * 1000 + par.rank + 1)
        self.stream = build_stream(cfg, self.tokenizer, "train", rank=par.rank, world_size=par.world_size)
        self.profiler = Profiler(cfg.profiling, self.run.root, self.device)
        self.profiler.instrument_module(self.raw_model, level="fine")
        self.act_norms = ActivationNorms(self.raw_model.blocks) if cfg.logging.log_activation_norms else None
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)
        self._announce()

    def _use_deferred_stats(self) -> bool:
        """Read each step's statistics one step late (DeferredStats) and skip a bad step on the device (fused
        AdamW's found_inf), so the host never waits for the GPU to drain between steps. Under DDP the
        statistics are all-reduced on the device first, so every rank takes the same skip and stop decisions.
        Muon (no found_inf) and fp16 (GradScaler owns found_inf) read each step's statistics at once."""
        mode = self.cfg.training.deferred_stats
        possible = self.scaler is None and self.parallel.skips_on_device(self.optimizer)
        if mode == "on" and not possible:
            raise TrainingError("training.deferred_stats = 'on' needs fused AdamW (optimizer.optimizer_name = "
                                "'adamw', optimizer.fused = 'on' or 'auto' on CUDA) and no fp16 GradScaler")
        return possible and (mode == "on" or (mode == "auto" and self.device.type == "cuda"))

    def _announce(self) -> None:
        cfg, par = self.cfg, self.parallel
        n_all, n_body = self.raw_model.num_params(), self.raw_model.num_params(include_embeddings=False)
        global_batch = cfg.data.batch_size * cfg.training.grad_accum_steps * par.world_size
        self.logger.info(
            f"run {self.run_name} in {self.run.root} | device {self.device} ({self.precision.name}) | "
            f"world size {par.world_size} | params {n_all / 1e6:.2f}M ({n_body / 1e6:.2f}M without embeddings) | "
            f"global batch {global_batch} sequences x {cfg.model.context_length} tokens"
            + (f" | resumed from {self.resume_from} at step {self.micro_step}" if self.resume_from else "")
        )
        self.logger.info(f"data: {self.stream.describe()}")

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        return save_trainer_checkpoint(self)

    def _load_checkpoint(self, path: Path) -> None:
        try:
            load_trainer_checkpoint(self, path)
        except CheckpointError as e:
            raise TrainingError(str(e)) from None

    # ---------------------------------------------------------------- steps
    def _next_batch(self) -> dict[str, torch.Tensor]:
        batch = next(self.stream)
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _train_step(self) -> dict[str, float]:
        cfg, par = self.cfg, self.parallel
        if self._steps_taken == 1:
            # The first step built (and compiled) everything long-lived; moving those objects out of the
            # collector's sight keeps its full passes short, which would otherwise stall a step now and then.
            gc.collect()
            gc.freeze()
        self._steps_taken += 1
        accum = cfg.training.grad_accum_steps
        t0 = time.perf_counter()
        with self.profiler.range("data_wait"):
            batches = [self._next_batch() for _ in range(accum)]
        data_wait = time.perf_counter() - t0
        # Normalise by the real tokens of the whole optimizer step, all ranks together; DDP then averages
        # gradients over ranks, hence the division by world size.
        local_tokens = torch.stack([self.objective.real_tokens(b).sum() for b in batches]).sum().float()
        global_tokens = par.all_reduce_sum(local_tokens.clone())
        normalizer = global_tokens / par.world_size
        loss_sum = torch.zeros((), device=self.device)
        ce_sum = torch.zeros((), device=self.device)
        acc_sum = torch.zeros((), device=self.device)
        dropped_sum = torch.zeros((), device=self.device)
        if self.act_norms is not None:
            self.act_norms.armed = _crossed(self.micro_step, self.micro_step + accum, cfg.training.log_freq_iteration)
        self.model.train()
        for i, batch in enumerate(batches):
            sync = par.no_sync(self.model) if i < accum - 1 else contextlib.nullcontext()
            with sync:
                with self.profiler.range("forward"), self.precision.autocast():
                    if self.loss_step is not None:
                        loss, m = self.loss_step(batch, self.generator, normalizer)
                    else:
                        loss, m = self.objective(self.model, batch, self.generator, normalizer)
                with self.profiler.range("backward"):
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_sum += loss.detach()
            ce_sum += m["masked_ce"]
            acc_sum += m["masked_acc"]
            if "num_dropped" in m:
                dropped_sum += m["num_dropped"]
            if self.act_norms is not None:
                self.act_norms.armed = False
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        with self.profiler.range("grad_clip", "fine"):
            grad_norm = self._clip_gradients()
        if self.defer_stats:
            return self._finish_step_deferred(loss_sum, ce_sum / accum, acc_sum / accum, grad_norm, global_tokens,
                                              dropped_sum, data_wait)
        stop = torch.tensor(self.stop.flag, device=self.device)
        reduced = par.all_reduce_sum(torch.stack([loss_sum, ce_sum / accum, acc_sum / accum, stop, dropped_sum]))
        loss_v, ce_v, acc_v, stop_v, dropped_v = reduced.tolist()  # the one host sync of the step
        loss_v, ce_v, acc_v = loss_v / par.world_size, ce_v / par.world_size, acc_v / par.world_size
        grad_v = float(grad_norm)
        if stop_v > 0:
            self.stop.agree()
        finite = math.isfinite(loss_v) and (math.isfinite(grad_v) or self.scaler is not None)
        if finite and dropped_v == 0:
            with self.profiler.range("optimizer_step"):
                par.optimizer_step(self.optimizer, self.scaler)
            self.scheduler.step()
            self.bad_steps = 0
        else:
            self._count_bad_step(self.micro_step + accum, loss_v, grad_v, dropped_v)
            if self.scaler is not None:
                self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._check_diverged()
        return {
            "metrics.loss": loss_v,
            "metrics.masked_ce": ce_v,
            "metrics.masked_acc": acc_v,
            "metrics.grad_l2_norm": grad_v,
            "metrics.tokens": float(global_tokens),
            "metrics.data_wait_s": data_wait,
            "metrics.skipped_step": 0.0 if finite and dropped_v == 0 else 1.0,
        }

    def _clip_gradients(self) -> torch.Tensor:
        """Scale gradients to a global L2 norm of at most optimizer.grad_clip; returns the norm before.

        Fused AdamW divides each gradient by its `grad_scale` as it reads it, so there the clip factor goes
        to the optimizer instead of a multiply over every gradient (a read and a write of all of them):
        the same update, one pass fewer. Other optimizers get torch's clip_grad_norm_."""
        clip = self.cfg.optimizer.grad_clip
        max_norm = clip if clip > 0 else math.inf
        params = self.raw_model.parameters()
        if not (self.scaler is None and self.parallel.skips_on_device(self.optimizer)):
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)
        # clip_grad_norm_ multiplies by min(1, max_norm / (norm + 1e-6)); dividing by its inverse is the same
        self.optimizer.grad_scale = ((grad_norm + 1e-6) / max_norm).clamp_min(1.0) if clip > 0 else None
        return grad_norm

    def _finish_step_deferred(self, loss: torch.Tensor, ce: torch.Tensor, acc: torch.Tensor, grad_norm: torch.Tensor,
                              tokens: torch.Tensor, dropped: torch.Tensor, data_wait: float) -> DeferredStats:
        """The end of a step without a host sync: skip on the device, settle the previous step's bookkeeping."""
        par = self.parallel
        stop = torch.full((), self.stop.flag, device=self.device)
        # Queued on the device like the rest (no host wait); gradients are already identical across ranks, the
        # loss, drop count and stop flags are made so here, hence one skip/stop decision for all ranks.
        loss, ce, acc, dropped, stop = par.all_reduce_sum(torch.stack([loss, ce, acc, dropped, stop])).unbind()
        loss, ce, acc = loss / par.world_size, ce / par.world_size, acc / par.world_size
        skip = (~torch.isfinite(loss) | ~torch.isfinite(grad_norm) | (dropped > 0)).float()
        stats = DeferredStats(torch.stack([loss, ce, acc, grad_norm.float(), tokens, dropped, skip, stop]),
                              self.micro_step + self.cfg.training.grad_accum_steps, data_wait)
        # This step's forward and backward are queued, so waiting for the previous step's statistics leaves
        # the GPU busy; its scheduler step must come before this update, exactly as with the sync path.
        self._settle_stats()
        self._unsettled = stats
        self.optimizer.found_inf = skip  # the fused kernel leaves weights, moments and step count as they are
        with self.profiler.range("optimizer_step"):
            self.parallel.optimizer_step(self.optimizer, None)
        self.optimizer.zero_grad(set_to_none=True)
        return stats

    def _settle_stats(self) -> None:
        """Bookkeeping of a deferred step (scheduler, bad-step count): once, in order, before the next update."""
        stats, self._unsettled = self._unsettled, None
        if stats is None or stats.settled:
            return
        stats.settled = True
        if stats.stop_requested:
            self.stop.agree()
        if stats["metrics.skipped_step"] == 0:
            self.scheduler.step()
            self.bad_steps = 0
        else:
            self._count_bad_step(stats.step, stats["metrics.loss"], stats["metrics.grad_l2_norm"],
                                 stats["metrics.dropped_masked"])
            self._check_diverged()

    def _count_bad_step(self, step: int, loss_v: float, grad_v: float, dropped_v: float) -> None:
        cfg = self.cfg
        if dropped_v > 0:  # not divergence: a masked count beyond the static capacity (odds below 1e-15)
            self.logger.info(f"warning: {int(dropped_v)} masked positions beyond the static head capacity at step "
                             f"{step}; skipping the update rather than scoring fewer tokens")
            return
        self.bad_steps += 1
        self.logger.info(f"warning: non-finite loss ({loss_v}) or gradient norm ({grad_v}) at step "
                         f"{step}; skipping the update "
                         f"({self.bad_steps}/{cfg.training.max_consecutive_bad_steps})")

    def _check_diverged(self) -> None:
        cfg = self.cfg
        if self.bad_steps >= cfg.training.max_consecutive_bad_steps:
            raise TrainingDiverged(
                f"training diverged: {self.bad_steps} consecutive steps with non-finite loss or gradients "
                f"(training.max_consecutive_bad_steps = {cfg.training.max_consecutive_bad_steps}); "
                "lower optimizer.lr, enable gradient clipping, or resume from an earlier checkpoint"
            )

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
        self._build()
        cfg, par = self.cfg, self.parallel
        from logger.progress import make_progress

        accum = cfg.training.grad_accum_steps
        progress = make_progress(cfg.training.max_train_iteration, cfg.logging.progress_bar if par.is_main else "off",
                                 start=self.micro_step)
        losses: list[tuple[int, float]] = []
        last_val: float | None = None
        self.stop.install()
        window_t0, window_tokens = time.perf_counter(), 0.0
        saved_at = -1
        unread: collections.deque[Any] = collections.deque()  # step stats not yet read (deferred on CUDA)
        try:
            while self.micro_step < cfg.training.max_train_iteration and self.stop.agreed is None:
                prev = self.micro_step
                for s in range(prev, prev + accum):
                    self.profiler.step(s)
                with self.profiler.range("train_step"):
                    stats = self._train_step()
                self.micro_step += accum
                unread.append(stats)
                # A deferred step is read once the GPU has finished it, or at once where the loop needs it
                # (logging, validation, samples, checkpoints, the end): never a wait in the middle of a stretch.
                needed = (self.stop.agreed is not None or self.micro_step >= cfg.training.max_train_iteration
                          or any(_crossed(prev, self.micro_step, every) for every in (
                              cfg.training.log_freq_iteration, cfg.training.val_freq_iteration,
                              cfg.training.sample_freq_iteration or 10**18, cfg.checkpoint.save_freq_iteration)))
                if needed and self.defer_stats:
                    self._settle_stats()
                while unread and (needed or getattr(unread[0], "ready", True)):
                    done = unread.popleft()
                    step_of = getattr(done, "step", self.micro_step)
                    window_tokens += done["metrics.tokens"]
                    losses.append((step_of, done["metrics.loss"]))
                    progress.update(step_of, loss=done["metrics.loss"])
                if _crossed(prev, self.micro_step, cfg.training.log_freq_iteration) or \
                        self.micro_step >= cfg.training.max_train_iteration:
                    stats = dict(stats)
                    elapsed = time.perf_counter() - window_t0
                    stats["metrics.tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                    window_t0, window_tokens = time.perf_counter(), 0.0
                    self._log_train(stats)
                if not cfg.training.skip_validation and (
                        _crossed(prev, self.micro_step, cfg.training.val_freq_iteration)
                        or self.micro_step >= cfg.training.max_train_iteration):
                    val = self.validate()
                    last_val = val["val.nelbo"]
                    self.logger.log(val, step=self.micro_step)
                if cfg.training.sample_freq_iteration and par.is_main and _crossed(
                        prev, self.micro_step, cfg.training.sample_freq_iteration):
                    write_samples(self)
                if _crossed(prev, self.micro_step, cfg.checkpoint.save_freq_iteration):
                    self.save_checkpoint()
                    saved_at = self.micro_step
            interrupted = self.stop.agreed is not None
            if saved_at != self.micro_step:
                self.save_checkpoint()
            if not interrupted:
                par.settle_parameters(self.optimizer)
                if par.is_main:
                    export_final(self.raw_model, cfg, self.run.tokenizer, self.run.final)
                    if cfg.training.num_samples > 0:
                        write_samples(self)
                par.barrier()
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
