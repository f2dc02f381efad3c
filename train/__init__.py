"""Pretraining / fine-tuning on mixed verbal, spatial and action targets (DeepSpeed or plain torch).

Entry points: `magma train --config configs/train/<name>.yaml [--set k=v ...]`,
`python -m train ...` (under torchrun / deepspeed launchers), or `train.loop.train(cfg)`.
Reads only the shard layout of `magma data build` (top-level manifest.json -> per-source
folders of shard-*.tar, weights, action_stats); imports only `magma`.

Run folder layout (`run_dir` in the config):

    <run_dir>/config.yaml              the resolved config (after --set overrides)
    <run_dir>/metrics.jsonl            one JSON object per logged step: step, loss, loss_verbal,
                                       loss_spatial, loss_action (null when absent from the step),
                                       lr, grad_norm, tokens_per_s, samples_per_s, padding_frac,
                                       data_wait_frac, step_time_s, skipped
    <run_dir>/tensorboard/             TensorBoard scalars (train/<metric>)
    <run_dir>/checkpoints/step-N/      HF folder (load_checkpoint) + resume/ (optimizer, engine,
                                       per-rank RNG) + trainer_state.json (written last)
    <run_dir>/checkpoints/latest       text file naming the newest complete step-N
    <run_dir>/final/                   HF folder of the final weights (LoRA merged), with
                                       action_stats.json from the shard manifest
    <run_dir>/debug/                   nonfinite-step-N-rank-R.json when the loss turns NaN/inf

Rerunning the same command resumes from `latest` (model, optimizer, scheduler, RNG, data
position); SIGTERM saves a checkpoint and exits 0.
"""
