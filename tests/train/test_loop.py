"""One-process training: losses go down, checkpoints are atomic, resume is bitwise exact."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from magma.checkpoint import load_checkpoint
from train.config import load_train_config
from train.loop import NonFiniteLossError, train
from train.metrics import read_metrics

from conftest import (DEVICE_OVERRIDES, EXACT, HERE, MICRO_TRAIN, REPO, train_cmd, train_env, train_inprocess,
                      wait_for_step)

STEPS = ("max_steps=12", "checkpoint.every=2", "checkpoint.keep_last=2")
CURVE_KEYS = ("loss", "loss_verbal", "loss_spatial", "loss_action", "lr", "grad_norm")


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ref") / "run"
    train_inprocess(run, shards, *STEPS, "log.tensorboard=true", "log.progress=false")
    return run


def curve(run: Path) -> list[tuple]:
    return [tuple(r[k] for k in CURVE_KEYS) for r in read_metrics(run)]


def assert_same_curve(a: Path, b: Path) -> None:
    """Bitwise on CPU fp32; within tolerance on CUDA / bf16 (non-deterministic kernels)."""
    if EXACT:
        assert curve(a) == curve(b)
    else:
        for x, y in zip(curve(a), curve(b), strict=True):
            assert x == pytest.approx(y, rel=2e-2, abs=1e-3)


def assert_same_final_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]) if EXACT else torch.allclose(wa[k], wb[k], rtol=5e-2, atol=5e-3), k


def test_every_kind_loss_goes_down_and_run_folder_is_complete(reference):
    rows = read_metrics(reference)
    assert [r["step"] for r in rows] == list(range(1, 13))
    for kind in ("loss", "loss_verbal", "loss_spatial", "loss_action"):
        vals = [r[kind] for r in rows if r[kind] is not None]
        first, last = sum(vals[:2]) / 2, sum(vals[-2:]) / 2
        assert last < first - 0.5, (kind, vals)
    assert all(r["tokens_per_s"] > 0 and 0 <= r["padding_frac"] < 1 for r in rows)
    assert (reference / "config.yaml").is_file() and list((reference / "tensorboard").glob("events.*"))
    ckpts = reference / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-12"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-10", "step-12"]  # keep_last=2
    model, processor, stats = load_checkpoint(reference / "final")
    assert "toy" in stats and stats["toy"].dim == 3
    load_checkpoint(ckpts / "step-10")


@pytest.mark.slow
def test_kill9_at_random_step_then_resume_is_bitwise_identical(reference, shards, tmp_path):
    run = tmp_path / "run"
    kill_at = random.Random(5).randint(3, 9)
    proc = subprocess.Popen(train_cmd(run, shards, *STEPS), cwd=REPO, env=train_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(run, kill_at, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run / "final").exists()
    result = train_inprocess(run, shards, *STEPS)
    assert result.resumed_from is not None and result.resumed_from.name != "step-12"
    assert_same_curve(run, reference)
    assert_same_final_weights(run, reference)


@pytest.mark.slow
def test_kill_during_checkpoint_write_keeps_latest_valid(reference, shards, tmp_path):
    run = tmp_path / "run"
    env = dict(train_env(), CRASH_AT_STEP="6")
    proc = subprocess.run([sys.executable, str(HERE / "crash_in_save.py")] + train_cmd(run, shards, *STEPS)[3:],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = run / "checkpoints"
    assert (ckpts / ".tmp-step-6").is_dir()
    assert (ckpts / "latest").read_text().strip() == "step-4"
    load_checkpoint(ckpts / "step-4")
    assert train_inprocess(run, shards, *STEPS).resumed_from == ckpts / "step-4"
    assert not (ckpts / ".tmp-step-6").exists()
    assert_same_curve(run, reference)
    assert_same_final_weights(run, reference)


@pytest.mark.slow
def test_sigterm_saves_and_exits_zero_then_resumes(reference, shards, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(run, shards, *STEPS), cwd=REPO, env=train_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(run, 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    state = json.loads((run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
                        / "trainer_state.json").read_text())
    assert 3 <= state["step"] < 12 and "preempted" in out
    assert train_inprocess(run, shards, *STEPS).resumed_from.name == f"step-{state['step']}"
    assert_same_curve(run, reference)
    assert_same_final_weights(run, reference)


def test_nan_loss_stops_naming_step_and_sources(shards, tmp_path):
    from magma.build import build_model
    from magma.checkpoint import save_checkpoint
    model, processor = build_model(HERE / "micro_model.yaml")
    with torch.no_grad():
        model.multi_modal_projector.proj[0].weight[0, 0] = float("nan")
    save_checkpoint(model, processor, tmp_path / "nan_ckpt")
    cfg = load_train_config(MICRO_TRAIN, [f"run_dir={tmp_path / 'run'}", f"data.shards={shards}",
                                          "model.config=", f"model.checkpoint={tmp_path / 'nan_ckpt'}",
                                          *DEVICE_OVERRIDES])
    with pytest.raises(NonFiniteLossError, match=r"step 1; batch sources \['action', 'spatial', 'verbal'\]"):
        train(cfg)
    debug = json.loads((tmp_path / "run" / "debug" / "nonfinite-step-1-rank-0.json").read_text())
    assert debug["step"] == 1 and len(debug["sample_ids"]) == 8


def test_lora_frozen_vision_and_gradient_checkpointing(shards, tmp_path):
    from magma.build import build_model
    initial = build_model(HERE / "micro_model.yaml")[0].state_dict()
    cfg = load_train_config(MICRO_TRAIN, [
        f"run_dir={tmp_path / 'run'}", f"data.shards={shards}", "max_steps=3", "checkpoint.every=0",
        "model.freeze_vision=true", "model.lora.enabled=true", "model.gradient_checkpointing=true",
        "optim.lr=0.05", "log.progress=false", *DEVICE_OVERRIDES])
    result = train(cfg)
    assert result.final_step == 3
    model, _, _ = load_checkpoint(tmp_path / "run" / "final")
    final = model.state_dict()
    assert not any("lora" in k for k in final)  # merged into plain weights
    for k, v in final.items():
        if k.startswith(("vision_tower", "multi_modal_projector")):
            assert torch.equal(v, initial[k]), k
    q = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(final[q], initial[q])


def test_bf16_autocast_runs(shards, tmp_path):
    cfg = load_train_config(MICRO_TRAIN, [f"run_dir={tmp_path / 'run'}", f"data.shards={shards}",
                                          "max_steps=2", *DEVICE_OVERRIDES, "precision=bf16",
                                          "checkpoint.every=0"])
    result = train(cfg)
    assert result.final_step == 2 and result.final_loss == result.final_loss


def test_resume_with_another_engine_is_refused_with_the_fix(reference, shards, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", run / "checkpoints")
    cfg = load_train_config(MICRO_TRAIN, [f"run_dir={run}", f"data.shards={shards}", *DEVICE_OVERRIDES,
                                          "dist.engine=deepspeed", "max_steps=14"])
    with pytest.raises(ValueError, match="saved by the torch engine.*--set model.checkpoint="):
        train(cfg)
