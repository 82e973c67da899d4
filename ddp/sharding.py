"""ZeRO-1 optimizer-state sharding for our optimizers (AdamW and Muon).

Each rank owns a disjoint, size-balanced set of WHOLE parameters (Muon orthogonalises whole matrices),
keeps optimizer state only for those, steps them, then every parameter is broadcast from its owner.
Gradients are already identical on every rank (DDP averaged them), so the result equals the unsharded step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from config.schema import OptimizerConfig
from diffusionlm.training.optim import ParamGroup, make_optimizer

STATE_FORMAT = "diffusionlm-optimizer-shard/1"


def assign_owners(sizes: list[int], world_size: int) -> list[int]:
    """Owner rank of each parameter: largest first onto the least-loaded rank (ties: lowest index/rank).

    A pure function of the sizes, so every rank computes the same assignment without talking.
    """
    loads = [0] * world_size
    owners = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world_size), key=lambda r: (loads[r], r))
        owners[i] = r
        loads[r] += sizes[i]
    return owners


def state_slots(group_name: str) -> int:
    """Optimizer-state tensors per parameter element: Muon keeps one momentum buffer, Adam two moments.
    Balancing numel x slots balances state memory, which is what sharding is for."""
    return 1 if group_name == "hidden" else 2


def _hyperparameters(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k != "params"}


class OptimizerStateSharding(torch.optim.Optimizer):
    """Looks like the full optimizer (same `param_groups`, so the LR scheduler and lr logging work),
    but holds state and does the update only for this rank's parameters.

    `param_groups[i]` holds ALL parameters of group i; its hyperparameters are copied into the local
    optimizer before each step, so a scheduler's lr changes reach it.
    """

    def __init__(self, groups: list[ParamGroup], opt_cfg: OptimizerConfig, rank: int, world_size: int,
                 process_group: Any = None, bucket_cap_mb: float = 25.0):
        self.rank, self.world_size = rank, world_size
        self.process_group = process_group
        self.bucket_bytes = int(bucket_cap_mb * 2**20)
        self.group_names = [g.name for g in groups]
        flat = [(p, name) for g in groups for p, name in zip(g.params, g.param_names)]
        slots = [state_slots(g.name) for g in groups for _ in g.params]
        self.owners = assign_owners([p.numel() * k for (p, _), k in zip(flat, slots)], world_size)
        self.name_of = {id(p): name for p, name in flat}
        self.owned_names = [name for (_, name), r in zip(flat, self.owners) if r == rank]
        owned = set(self.owned_names)
        local_groups = [ParamGroup(g.name, [p for p, n in zip(g.params, g.param_names) if n in owned],
                                   [n for n in g.param_names if n in owned]) for g in groups]
        # The local optimizer keeps every group (empty ones too) so local.param_groups[i] <-> groups[i].
        self.local = make_optimizer(local_groups, opt_cfg) if owned else None
        # A state-free optimizer over everything gives the hyperparameters of each full group.
        template = make_optimizer(groups, opt_cfg)
        # The same on every rank (a rank that owns nothing has no local optimizer to ask).
        self.skips_on_found_inf = isinstance(template, torch.optim.AdamW) and bool(template.defaults.get("fused"))
        full = [dict(_hyperparameters(tg), params=list(g.params)) for tg, g in zip(template.param_groups, groups)]
        super().__init__(full, defaults={})
        self._broadcast_plan = self._plan_broadcasts(flat)
        self._bucket_of = {id(p): i for i, (_, params) in enumerate(self._broadcast_plan) for p in params}
        self._pending: dict[int, tuple[Any, torch.Tensor]] = {}  # bucket -> (work, buffer) still in flight
        self._sync_hooks: list[Any] = []

    # ---------------------------------------------------------------- stepping
    def _plan_broadcasts(self, flat: list[tuple[nn.Parameter, str]]) -> list[tuple[int, list[nn.Parameter]]]:
        """Buckets of (owner, params) of one dtype and device, each up to `bucket_bytes`."""
        plan: list[tuple[int, list[nn.Parameter]]] = []
        for r in range(self.world_size):
            by_kind: dict[tuple[torch.dtype, torch.device], list[nn.Parameter]] = {}
            for (p, _), owner in zip(flat, self.owners):
                if owner == r:
                    by_kind.setdefault((p.dtype, p.device), []).append(p)
            for params in by_kind.values():
                bucket, size = [], 0
                for p in params:
                    if bucket and size + p.numel() * p.element_size() > self.bucket_bytes:
                        plan.append((r, bucket))
                        bucket, size = [], 0
                    bucket.append(p)
                    size += p.numel() * p.element_size()
                if bucket:
                    plan.append((r, bucket))
        # Earliest-used parameters first: with deferred sync the first layers' buckets arrive first.
        position = {id(p): i for i, (p, _) in enumerate(flat)}
        return sorted(plan, key=lambda item: min(position[id(p)] for p in item[1]))

    def _sync_hyperparameters(self) -> None:
        if self.local is None:
            return
        for full, local in zip(self.param_groups, self.local.param_groups):
            for key in local:
                if key != "params" and key in full:
                    local[key] = full[key]

    def defer_parameter_sync(self, model: nn.Module) -> None:
        """Wait for each parameter's broadcast only when its module next runs forward, so the broadcasts
        after a step overlap the next forward instead of stalling before it. Not for compiled models: the
        waits would sit inside traced code."""
        # Every module but the root waits for all the parameters beneath it: a module may use a child's
        # weights without calling the child (the fused MLP reads its linears' weights directly), so a
        # child's own hook is not enough. Waiting twice costs a lookup; the root would wait for everything.
        for module in list(model.modules())[1:]:
            buckets = sorted({self._bucket_of[id(p)] for p in module.parameters()
                              if id(p) in self._bucket_of})
            if buckets:
                self._sync_hooks.append(module.register_forward_pre_hook(
                    lambda _module, _args, wanted=tuple(buckets): self._finish(wanted)))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        self.finish_parameter_sync()  # a bucket no forward asked for (or a step without forward)
        self._sync_hyperparameters()
        if self.local is not None:
            # A skipped step (trainer's deferred statistics) leaves the owned parameters as they are; the
            # broadcasts below then carry unchanged values, so every rank still agrees.
            self.local.found_inf = getattr(self, "found_inf", None)
            self.local.grad_scale = getattr(self, "grad_scale", None)  # gradient clipping, see Trainer
            self.local.step()
        self.broadcast_parameters()
        if not self._sync_hooks:
            self.finish_parameter_sync()

    @torch.no_grad()
    def broadcast_parameters(self) -> None:
        """Launch every bucket's broadcast from its owner; `_finish` waits and copies into non-owners."""
        if self.world_size == 1:
            return
        for i, (owner, params) in enumerate(self._broadcast_plan):
            if owner == self.rank:
                buf = _flatten_dense_tensors([p.detach() for p in params])
            else:  # overwritten by the broadcast: no need to pack stale values
                buf = torch.empty(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
            src = dist.get_global_rank(self.process_group, owner) if self.process_group is not None else owner
            self._pending[i] = (dist.broadcast(buf, src=src, group=self.process_group, async_op=True), buf)

    @torch.no_grad()
    def _finish(self, buckets: tuple[int, ...] | list[int]) -> None:
        for i in buckets:
            entry = self._pending.pop(i, None)
            if entry is None:
                continue
            work, buf = entry
            work.wait()  # orders the current stream after the broadcast; the host does not block on CUDA
            owner, params = self._broadcast_plan[i]
            if owner != self.rank:
                for p, synced in zip(params, _unflatten_dense_tensors(buf, params)):
                    p.copy_(synced)

    def finish_parameter_sync(self) -> None:
        """Every parameter up to date on every rank (before reading weights outside a forward)."""
        self._finish(list(self._pending))

    # ---------------------------------------------------------------- state
    def local_state_bytes(self) -> int:
        """Bytes of optimizer state tensors this rank holds."""
        if self.local is None:
            return 0
        return sum(v.numel() * v.element_size() for s in self.local.state.values() for v in s.values()
                   if isinstance(v, torch.Tensor))

    def state_dict(self) -> dict[str, Any]:
        """This rank's shard, keyed by parameter NAME so any world size can load it."""
        state = {}
        if self.local is not None:
            for group in self.local.param_groups:
                for p in group["params"]:
                    if p in self.local.state:
                        state[self.name_of[id(p)]] = dict(self.local.state[p])
        return {
            "format": STATE_FORMAT,
            "group_names": list(self.group_names),
            "param_groups": [_hyperparameters(g) for g in self.param_groups],
            "state": state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load from a named state (one shard, or the merge of all shards): takes what this rank owns."""
        check_compatible(state_dict, self.group_names)
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            group.update({k: v for k, v in saved.items() if k in group})
        if self.local is None:
            return
        load_named_state(self.local, self.name_of, state_dict["state"], state_dict["param_groups"])
        self._sync_hyperparameters()


def check_compatible(state_dict: dict[str, Any], group_names: list[str]) -> None:
    if state_dict.get("format") != STATE_FORMAT:
        raise ValueError(f"optimizer state has format {state_dict.get('format')!r}, expected {STATE_FORMAT!r}")
    if state_dict["group_names"] != group_names:
        raise ValueError(f"optimizer state has parameter groups {state_dict['group_names']}, this run has "
                         f"{group_names}: was it saved with another optimizer.optimizer_name?")


def named_state(optimizer: torch.optim.Optimizer, name_of: dict[int, str],
                group_names: list[str]) -> dict[str, Any]:
    """The named-state format of an ordinary (unsharded) optimizer holding every parameter."""
    state = {name_of[id(p)]: dict(optimizer.state[p]) for g in optimizer.param_groups for p in g["params"]
             if p in optimizer.state}
    return {
        "format": STATE_FORMAT,
        "group_names": list(group_names),
        "param_groups": [_hyperparameters(g) for g in optimizer.param_groups],
        "state": state,
    }


def load_named_state(optimizer: torch.optim.Optimizer, name_of: dict[int, str], state: dict[str, Any],
                     hyper: list[dict[str, Any]]) -> None:
    """Load per-name state into an optimizer over any subset of the parameters, via torch's own
    load_state_dict (which moves and casts each tensor the way that optimizer wants)."""
    own = optimizer.state_dict()
    by_index: dict[int, Any] = {}
    index = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = name_of.get(id(p))
            if name is not None and name in state:  # absent: never stepped (no gradient yet), fresh state
                by_index[index] = state[name]
            index += 1
    groups = [dict(saved, params=g["params"]) for g, saved in zip(own["param_groups"], hyper)]
    for g, local in zip(groups, own["param_groups"]):
        # keys the local optimizer does not know (initial_lr of a scheduler) stay out
        for key in [k for k in g if k not in local and k != "params"]:
            g.pop(key)
    optimizer.load_state_dict({"state": by_index, "param_groups": groups})
