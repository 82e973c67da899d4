"""What one optimizer step does, as `Trainer` runs it: fetch the micro-batches, forward and backward through
the objective's loss, clip, update (or skip a non-finite step), and gather the step's statistics.

`OptimizerStep` is a part of `Trainer` (it reads the trainer's model, loss, optimizer, scheduler, parallel
context and profiler), kept in its own file so the loop and the run's lifecycle read apart from the step.
On CUDA with fused AdamW the statistics are read one step late and a bad step is skipped on the device, so the
host never waits for the GPU between steps; elsewhere they are read at once.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from typing import Any

import torch

from diffusionlm.training.errors import TrainingDiverged, TrainingError
from diffusionlm.training.step import StepStats


def crossed(prev: int, now: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (prev, now]."""
    return now // every > prev // every


class OptimizerStep:
    cfg: Any
    parallel: Any
    device: torch.device

    def _use_deferred_stats(self) -> bool:
        """Read each step's statistics one step late (StepStats read lazily) and skip a bad step on the device (fused
        AdamW's found_inf), so the host never waits for the GPU to drain between steps. Under DDP the
        statistics are all-reduced on the device first, so every rank takes the same skip and stop decisions.
        Muon (no found_inf) and fp16 (GradScaler owns found_inf) read each step's statistics at once."""
        mode = self.cfg.training.deferred_stats
        possible = self.scaler is None and self.parallel.skips_on_device(self.optimizer)
        if mode == "on" and not possible:
            raise TrainingError("training.deferred_stats = 'on' needs fused AdamW (optimizer.optimizer_name = "
                                "'adamw', optimizer.fused = 'on' or 'auto' on CUDA) and no fp16 GradScaler")
        return possible and (mode == "on" or (mode == "auto" and self.device.type == "cuda"))


    def _next_batch(self) -> dict[str, torch.Tensor]:
        batch = next(self.stream)
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _run_step(self) -> StepStats:
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
        # loss, masked CE, masked accuracy, dropped positions, masked positions: summed over micro-steps
        sums = torch.zeros(5, device=self.device)
        if self.act_norms is not None:
            self.act_norms.armed = crossed(self.micro_step, self.micro_step + accum, cfg.training.log_freq_iteration)
        self.model.train()
        for i, batch in enumerate(batches):
            sync = par.no_sync(self.model) if i < accum - 1 else contextlib.nullcontext()
            with sync:
                with self.profiler.range("forward"), self.precision.autocast():
                    loss, m = self.loss(batch, self.generator, normalizer)
                with self.profiler.range("backward"):
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            dropped = m.get("num_dropped", torch.zeros((), device=self.device))
            sums += torch.stack([loss.detach().float(), m["masked_ce"].float(), m["masked_acc"].float(),
                                 dropped.float(), m["num_masked"].float()])
            if self.act_norms is not None:
                self.act_norms.armed = False
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        with self.profiler.range("grad_clip", "fine"):
            grad_norm = self._clip_gradients()
        stop = torch.full((), float(self.stop.flag), device=self.device)
        # Gradients are already identical across ranks; the loss, drop count and stop flags are made so here,
        # hence one skip/stop decision for all ranks. Queued on the device like the rest (no host wait).
        reduced = par.all_reduce_sum(torch.cat([sums, stop[None]]))
        loss, ce, acc, dropped, masked, stop = reduced.unbind()
        loss, ce, acc = loss / par.world_size, ce / (accum * par.world_size), acc / (accum * par.world_size)
        # With fp16 the GradScaler skips non-finite gradients itself; that is no bad step.
        bad = ~torch.isfinite(loss) | (dropped > 0)
        if self.scaler is None:
            bad = bad | ~torch.isfinite(grad_norm)
        values = torch.stack([loss, ce, acc, grad_norm.float(), global_tokens, dropped, bad.float(), stop, masked])
        stats = StepStats(values, self.micro_step + accum, data_wait)
        if self.defer_stats:
            # This step's forward and backward are queued, so waiting for the previous step's statistics leaves
            # the GPU busy; its scheduler step must come before this update, exactly as with the sync path.
            self._settle_stats()
            self._unsettled = stats
            self.optimizer.found_inf = bad.float()  # the fused kernel leaves weights, moments and step count
            with self.profiler.range("optimizer_step"):
                par.optimizer_step(self.optimizer, None)
            self.optimizer.zero_grad(set_to_none=True)
            return stats
        if stats.stop_requested:  # the one host sync of the step
            self.stop.agree()
        if stats["metrics.skipped_step"] == 0:
            with self.profiler.range("optimizer_step"):
                par.optimizer_step(self.optimizer, self.scaler)
            self.scheduler.step()
            self.bad_steps = 0
        else:
            self._count_bad_step(stats)
            if self.scaler is not None:
                self.scaler.update()
        stats.settled = True
        self.optimizer.zero_grad(set_to_none=True)
        self._check_diverged()
        return stats

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
            self._count_bad_step(stats)
            self._check_diverged()

    def _count_bad_step(self, stats: StepStats) -> None:
        cfg = self.cfg
        step, loss_v, grad_v = stats.step, stats["metrics.loss"], stats["metrics.grad_l2_norm"]
        dropped_v = stats["metrics.dropped_masked"]
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
