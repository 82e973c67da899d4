"""`diffusionlm-train-ddp`: data-parallel training over all local devices, or one rank of a torchrun job.

Launched on its own it starts `ddp.nproc_per_node` workers through torch's elastic launcher; under torchrun
(RANK/WORLD_SIZE set) it is one worker. Workers with a fixed run name resume from the run's latest complete
checkpoint by default, which is what makes `--max-restarts` pick up where a dead worker left off.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import record

from cli.train import build_parser as build_train_parser
from cli.train import run_training
from config import config_from_args

DEFAULT_RESOURCE = "train_ddp.toml"


def build_parser():
    return build_train_parser(prog="diffusionlm-train-ddp", default_resource=DEFAULT_RESOURCE)


def _launch(cfg, argv: list[str]) -> int:
    from ddp.launch import launch_workers, resolve_nproc
    from diffusionlm.training.run_dir import default_run_name

    nproc = resolve_nproc(cfg.ddp, cfg.model.device)
    worker_args = list(argv)
    if cfg.logging.run_name is None:
        # Named here, once: every worker, restarted ones too, then sees the same fixed name.
        worker_args += ["--set", f"logging.run_name={default_run_name(cfg)}"]
    global_batch = cfg.data.batch_size * cfg.training.grad_accum_steps * nproc
    print(f"starting {nproc} workers (max restarts {cfg.ddp.max_restarts}); global batch {global_batch} "
          f"sequences = {cfg.data.batch_size} per device x {cfg.training.grad_accum_steps} accumulation x {nproc}",
          file=sys.stderr)
    return launch_workers(worker_args, nproc, cfg.ddp.max_restarts)


@record  # the elastic agent then shows this rank's traceback in its failure report
def _worker(cfg, resume: str | None) -> int:
    from ddp import DDPContext, DDPSetupError
    from ddp.launch import SHARE_STORE_ENV, max_restarts, resume_after_restart, shares_agent_store_across_restarts

    if cfg.logging.run_name is None and max_restarts() > 0:
        print("error: restartable workers (--max-restarts > 0) need a fixed run name so a restart finds its run: "
              "--set logging.run_name=NAME (diffusionlm-train-ddp without torchrun sets one itself)", file=sys.stderr)
        return 2
    if resume is None and cfg.checkpoint.resume is None and cfg.logging.run_name is not None:
        resume = "auto"
    resume = resume_after_restart(resume if resume is not None else cfg.checkpoint.resume)
    try:
        ctx = DDPContext(cfg.ddp, cfg.model.device)
    except DDPSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ctx.is_main and shares_agent_store_across_restarts():
        print(f"warning: torchrun --max-restarts with a shared rendezvous store: restarted workers can fail to "
              f"connect (pytorch/pytorch#135712); export {SHARE_STORE_ENV}=1 before torchrun", file=sys.stderr)
    try:
        return run_training(cfg, resume, parallel=ctx)
    finally:
        ctx.close()


def main(argv: list[str] | None = None) -> int:
    from ddp import rank_env

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args, DEFAULT_RESOURCE)
    if rank_env() is None:
        return _launch(cfg, argv)
    return _worker(cfg, args.resume)


if __name__ == "__main__":
    raise SystemExit(main())
