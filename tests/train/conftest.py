from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests/synthetic_shards.py

from synthetic_shards import DEFAULT_SOURCES, write_shards  # noqa: E402

MICRO_TRAIN = HERE / "micro_train.yaml"
# scripts/gpu_check.sh reruns these tests with MAGMA_TRAIN_TEST_DEVICE=cuda (NCCL) and
# MAGMA_TRAIN_TEST_PRECISION=bf16; bitwise checks then become tolerance checks.
DEVICE = os.environ.get("MAGMA_TRAIN_TEST_DEVICE", "cpu")
PRECISION = os.environ.get("MAGMA_TRAIN_TEST_PRECISION", "fp32")
EXACT = DEVICE == "cpu" and PRECISION == "fp32"
DEVICE_OVERRIDES = (f"device={DEVICE}", f"precision={PRECISION}")


def n_ranks() -> int:
    """2 CPU ranks on gloo; on CUDA one rank per GPU (NCCL refuses two ranks on one GPU)."""
    if DEVICE == "cpu":
        return 2
    import torch
    return min(2, torch.cuda.device_count())


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"), DEFAULT_SOURCES)


def train_env(threads: int = 1) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO),
               TORCH_EXTENSIONS_DIR=str(REPO / ".cache" / "torch_extensions"))
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def train_cmd(run_dir: Path, shards: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "train", "--config", str(MICRO_TRAIN), "--set", f"run_dir={run_dir}",
            "--set", f"data.shards={shards}", *[a for o in (*DEVICE_OVERRIDES, *overrides) for a in ("--set", o)]]


def run_train(run_dir: Path, shards: Path, *overrides: str, timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(train_cmd(run_dir, shards, *overrides), cwd=REPO, env=train_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def torchrun_cmd(run_dir: Path, shards: Path, nproc: int, *overrides: str) -> list[str]:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_port", str(port)] + train_cmd(run_dir, shards, *overrides)[1:]


def torchrun_train(run_dir: Path, shards: Path, nproc: int, *overrides: str, timeout: int = 300):
    cmd = torchrun_cmd(run_dir, shards, nproc, *overrides)
    proc = subprocess.run(cmd, cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def train_inprocess(run_dir: Path, shards: Path, *overrides: str):
    """The same run as `run_train`, in this process with one thread (bitwise comparable)."""
    import torch

    from train.config import load_train_config
    from train.loop import train

    cfg = load_train_config(MICRO_TRAIN, [f"run_dir={run_dir}", f"data.shards={shards}", *DEVICE_OVERRIDES, *overrides])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(cfg)
    finally:
        torch.set_num_threads(threads)


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Polls metrics.jsonl until `step` is logged (fails if the process exits first)."""
    import json
    import time
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else "exited early"
        path = run / "metrics.jsonl"
        if path.is_file() and any(json.loads(x)["step"] >= step for x in path.read_text().splitlines() if x):
            return
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached")
