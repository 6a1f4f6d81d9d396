"""torch.distributed for a study: which rank this is, and the few collective steps the runner needs.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them the study runs in
one process and every method here is a no-op. NCCL when the study runs on
CUDA devices (one GPU per rank, by local rank), gloo otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    owns_group: bool = False
    local_rank: int = 0

    @classmethod
    def setup(cls, device: str | None) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), False, local)
        on_gpu = bool(device) and str(device).startswith(("cuda", "gpu")) and torch.cuda.is_available()
        if on_gpu:
            torch.cuda.set_device(local % torch.cuda.device_count())
        dist.init_process_group("nccl" if on_gpu else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), True, local)

    def device_for(self, device: str | None) -> str | None:
        """One GPU per rank: "cuda" becomes "cuda:<local rank>" under torchrun."""
        import torch

        if self.world > 1 and device in ("cuda", "gpu") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return device

    def broadcast(self, value: Any) -> Any:
        """rank 0's value, on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def rank_zero_first(self, fn: Callable[[], None]) -> None:
        """fn() on rank 0, then on the other ranks (which then find what rank 0 cached)."""
        if self.world == 1:
            fn()
            return
        if self.rank == 0:
            fn()
        self.barrier()
        if self.rank != 0:
            fn()
        self.barrier()

    def teardown(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
