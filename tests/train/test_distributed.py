"""Several CPU ranks on gloo through DeepSpeed: the same curves as one process (slow)."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from magma.checkpoint import load_checkpoint
from train.metrics import read_metrics

from conftest import (EXACT, REPO, n_ranks, torchrun_cmd, torchrun_train, train_cmd, train_env, train_inprocess)

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


def test_two_ranks_zero2_killed_and_resumed_matches_one_process_and_every_kind_goes_down(shards, tmp_path):
    steps = ("max_steps=12", "checkpoint.every=6")
    single = tmp_path / "single"
    train_inprocess(single, shards, *steps, "log.progress=false")
    ranks = tmp_path / "zero2"
    # same global batch: 2 ranks x micro 2 x accum 2 == 1 process x micro 4 x accum 2
    args = (*steps, MICRO, "dist.zero_stage=2", "dist.engine=deepspeed")
    proc = subprocess.Popen(torchrun_cmd(ranks, shards, RANKS, *args), cwd=REPO, env=train_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    latest = ranks / "checkpoints" / "latest"
    try:
        t0 = time.time()
        while not (latest.is_file() and latest.read_text().strip() == "step-6"):
            assert proc.poll() is None and time.time() - t0 < 240, "run ended before its step-6 checkpoint"
            time.sleep(0.02)
    finally:
        # kill -9 the launcher and every rank (torchrun starts ranks in their own sessions)
        tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
        for p in tree:
            p.send_signal(signal.SIGKILL)
        proc.wait()
        psutil.wait_procs(tree, timeout=30)
    assert not (ranks / "final").exists()
    out = torchrun_train(ranks, shards, RANKS, *args)
    assert "resumed from" in out.stdout and "at step 6" in out.stdout
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
