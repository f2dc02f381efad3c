"""Pretraining / fine-tuning on mixed verbal, spatial and action targets (DeepSpeed or plain torch).

Entry points: `magma train --config configs/train/<name>.yaml [--set k=v ...]`,
`python -m train ...` (under torchrun / deepspeed launchers), or `train.loop.train(cfg)`.
Reads only the shard layout of `magma data build` (top-level manifest.json -> per-source
folders of shard-*.tar, weights, action_stats); imports only `magma`.

Run folder layout (`run_dir` in the config):

    <run_dir>/config.yaml              the resolved config (after --set overrides)
    <run_dir>/metrics.jsonl            one JSON object per logged step: step, loss, loss_verbal,
                                       loss_spatial, loss_action (null when absent from the step),
                                       lr (the first parameter group's: the LM's, or the
                                       projector's when the LM is frozen), grad_norm,
                                       tokens_per_s, samples_per_s, padding_frac,
                                       train_flops (useful training FLOPs of the global
                                       batch's real tokens, magma.flops), flops_per_s,
                                       data_wait_frac, step_time_s, skipped
    <run_dir>/tensorboard/             TensorBoard scalars (train/<metric>)
    <run_dir>/checkpoints/step-N/      HF folder (load_checkpoint) + resume/ (optimizer, engine,
                                       per-rank RNG) + trainer_state.json (written last)
    <run_dir>/checkpoints/latest       text file naming the newest complete step-N
    <run_dir>/final/                   HF folder of the final weights (LoRA merged), with
                                       action_stats.json from the shard manifest
    <run_dir>/final/adapter/           LoRA runs: the adapter alone (train/lora.py), also in
                                       every step-N; `magma train merge-lora` merges it back
    <run_dir>/.zero3-init/             ZeRO-3 from a size config: rank 0's build, read
                                       partitioned by every rank, removed once loaded
    <run_dir>/debug/                   nonfinite-step-N-rank-R.json when the loss turns NaN/inf

Launchers (the config decides ZeRO stage, precision and batch shape; the launcher only starts ranks):

    magma train --config configs/train/tiny.yaml                        # 1 process, plain torch
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m train --config configs/train/tiny.yaml
    OMP_NUM_THREADS=1 deepspeed --num_gpus 2 --module train --config configs/train/tiny.yaml
    accelerate launch --multi_gpu --num_processes 8 -m train --config ...   # GPUs (torchrun inside)
    ... --set dist.zero_stage=3 --set precision=bf16 --set model.lora.enabled=true

Multi-node under SLURM (one torchrun per node; every rank sees the same run_dir and shards):

    #SBATCH --nodes=4 --ntasks-per-node=1 --gpus-per-node=8
    head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
    srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 8 --rdzv_backend c10d \
        --rdzv_endpoint "$head:29500" --rdzv_id "$SLURM_JOB_ID" \
        -m train --config configs/train/<name>.yaml --set precision=bf16 --set dist.zero_stage=2

What trains and how fast: model.freeze_vision / freeze_projector / freeze_language, model.lora
(modules_to_save: the projector beside the adapters), optim.lr with optim.projector_lr /
vision_lr / language_lr; the named recipes in configs/train/ (align-projector, finetune-full,
finetune-lora, finetune-module-lr). Under ZeRO-3 each rank builds only its partition
(train/zero3.py); DeepSpeed bf16 runs load weights in bf16.

Rerunning the same command resumes from `latest` (model, optimizer, scheduler, RNG, data
position); SIGTERM saves a checkpoint and exits 0.
"""
