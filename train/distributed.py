"""Process-group setup that works launcher-less, under torchrun and under `deepspeed` (CPU or GPU)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_launcher_defaults() -> None:
    """Single-process defaults so deepspeed.init_distributed works without a launcher, plus the
    CPU habits measured in ENVIRONMENT.md (one OpenMP thread per rank, a project-owned JIT cache)."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO_ROOT / ".cache" / "torch_extensions"))
    if int(os.environ["WORLD_SIZE"]) > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pick_device(choice: str) -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but torch.cuda.is_available() is False; use device=cpu")
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def init_distributed(device_choice: str = "auto", backend: str = "auto", need_group: bool = False) -> DistInfo:
    """Starts the process group when world_size > 1 or when DeepSpeed needs one (need_group)."""
    set_launcher_defaults()
    device = pick_device(device_choice)
    world = int(os.environ["WORLD_SIZE"])
    if (world > 1 or need_group) and not dist.is_initialized():
        chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        import deepspeed
        deepspeed.init_distributed(dist_backend=chosen, auto_mpi_discovery=False)
    return DistInfo(rank=int(os.environ["RANK"]), world_size=world,
                    local_rank=int(os.environ["LOCAL_RANK"]), device=device)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a no-op on one process); gloo needs CPU tensors, NCCL device tensors."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":
            on_device = values.cuda()
            dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
            values.copy_(on_device.cpu())
        else:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown(synchronise: bool = True) -> None:
    """Barrier + destroy: avoids `terminate called without an active exception` at exit."""
    if dist.is_initialized():
        if synchronise:
            dist.barrier()
        dist.destroy_process_group()
