"""Several CPU ranks on gloo through DeepSpeed: the same curves as one process (slow)."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from magma.checkpoint import load_checkpoint
from train.metrics import read_metrics

from conftest import EXACT, REPO, n_ranks, torchrun_train, train_cmd, train_env, train_inprocess

pytestmark = pytest.mark.slow
KINDS = ("loss", "loss_verbal", "loss_spatial", "loss_action")


RANKS = n_ranks()
MICRO = f"micro_batch_size={4 // RANKS}"  # same global batch as the one-process run (micro 4)


def assert_curves_close(a, b, rel=1e-4 if EXACT else 3e-2):
    ra, rb = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        for k in KINDS:
            if x[k] is None or y[k] is None:
                assert x[k] is None and y[k] is None, (x["step"], k)
            else:
                assert x[k] == pytest.approx(y[k], rel=rel), (x["step"], k, x[k], y[k])


def test_two_ranks_zero2_every_kind_goes_down_and_matches_one_process(shards, tmp_path):
    steps = ("max_steps=12", "checkpoint.every=6")
    single = tmp_path / "single"
    train_inprocess(single, shards, *steps, "log.progress=false")
    ranks = tmp_path / "zero2"
    # same global batch: 2 ranks x micro 2 x accum 2 == 1 process x micro 4 x accum 2
    torchrun_train(ranks, shards, RANKS, *steps, MICRO, "dist.zero_stage=2", "dist.engine=deepspeed")
    assert_curves_close(ranks, single)
    rows = read_metrics(ranks)
    for k in KINDS:
        vals = [r[k] for r in rows if r[k] is not None]
        assert sum(vals[-2:]) / 2 < sum(vals[:2]) / 2 - 0.5, (k, vals)
    load_checkpoint(ranks / "final")
    assert (ranks / "checkpoints" / "step-6" / "resume" / f"rng-rank-{RANKS - 1}.pt").is_file()


@pytest.fixture(scope="module")
def short_single(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("short") / "single"
    train_inprocess(run, shards, "max_steps=3", "log.progress=false")
    return run


def test_zero1_two_ranks_matches_one_process(shards, tmp_path, short_single):
    torchrun_train(tmp_path / "z1", shards, RANKS, "max_steps=3", MICRO, "dist.zero_stage=1",
                   "dist.engine=deepspeed")
    assert_curves_close(tmp_path / "z1", short_single)


def test_zero3_two_ranks_under_deepspeed_launcher_matches_one_process(shards, tmp_path, short_single):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = train_cmd(tmp_path / "z3", shards, "max_steps=3", MICRO, "dist.zero_stage=3",
                     "dist.engine=deepspeed")[3:]
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(RANKS), "--master_port", str(port),
           "--module", "train"] + args
    proc = subprocess.run(cmd, cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert_curves_close(tmp_path / "z3", short_single)
    model, _, _ = load_checkpoint(tmp_path / "z3" / "final")  # full weights gathered from ZeRO-3 shards
    assert sum(p.numel() for p in model.parameters()) > 200_000
