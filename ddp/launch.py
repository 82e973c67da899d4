"""Starting workers: one command that runs torch's elastic launcher (torchrun) over this machine's devices.

The launcher process fixes the run name before spawning, so workers restarted by the elastic agent
(`max_restarts`) find the same run directory and resume from its latest complete checkpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from config.schema import DDPConfig

# When a worker runs under a restarting agent without a fixed run name, it could not find its run again.
RESTART_COUNT_ENV = "TORCHELASTIC_RESTART_COUNT"
MAX_RESTARTS_ENV = "TORCHELASTIC_MAX_RESTARTS"
SHARE_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def shares_agent_store_across_restarts() -> bool:
    """Under torchrun with restarts and the agent's store shared with workers (torch's default)."""
    return max_restarts() > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def resolve_nproc(ddp_cfg: DDPConfig, model_device: str) -> int:
    """`auto`: every visible GPU, or 2 CPU processes when there is none (or model.device = cpu)."""
    if ddp_cfg.nproc_per_node != "auto":
        return int(ddp_cfg.nproc_per_node)
    if model_device != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return torch.cuda.device_count()
    return 2


def restart_count() -> int:
    return int(os.environ.get(RESTART_COUNT_ENV, "0"))


def max_restarts() -> int:
    return int(os.environ.get(MAX_RESTARTS_ENV, "0"))


def resume_after_restart(resume: str | None) -> str | None:
    """A restarted worker continues from the newest checkpoint of the run it was resuming, not the old one."""
    if resume is None or resume == "auto" or restart_count() == 0:
        return resume
    path = Path(resume)
    if (path / "meta.json").is_file():  # runs/<run>/checkpoints/step_N -> runs/<run>
        path = path.parent.parent
    return str(path)


def launch_workers(worker_args: list[str], nproc: int, restarts: int, module: str = "cli.train_ddp",
                   extra_launcher_args: list[str] | None = None) -> int:
    """Run `python -m <module> <worker_args>` on `nproc` local processes through torchrun's machinery.

    Returns the job's exit code: 0; 130 when the launcher itself was stopped by SIGINT/SIGTERM (after the
    workers' checkpoint); or the first failed worker's code (1 when it died from a signal).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if restarts > 0:
        # Restarted workers must not share the agent's rendezvous store with the dead attempt: they would read
        # its stale process-group addresses and fail to connect or hang (pytorch/pytorch#135712).
        os.environ.setdefault(SHARE_STORE_ENV, "1")
    launcher_args = ["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", str(restarts),
                     *(extra_launcher_args or []), "-m", module, *worker_args]
    try:
        run(parse_args(launcher_args))
    except SignalException as e:
        # The agent passed the signal on to the workers, which finish their step, checkpoint and exit; the job
        # ends the way the one-process trainer does on a signal.
        print(f"stopped by {e.sigval.name}: the workers checkpointed; continue with --resume auto and the same "
              "logging.run_name", file=sys.stderr)
        return 130
    except ChildFailedError as e:
        print(f"error: distributed job failed\n{e}", file=sys.stderr)
        _, first = e.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 1
    return 0
