#!/usr/bin/env bash
# The worked example's run: DAPO on Qwen2.5-Math-7B with verl's synchronous, colocated trainer
# (verl.trainer.main_ppo, hybrid engine) on 4 nodes x 8 H20, 512 prompts x 16 responses per step,
# 32 prompts per mini-batch, responses up to 28K tokens, 400 steps at lr 1e-6.
# Hand-written for this example in verl's launch-script form, with the setup that verl's
# fully-async recipe documents for its "colocate sync, 32 GPUs" run (docs/advance/fully_async.md,
# "Asynchronous Training on 7B Model"); its per-phase timings are in verl-sync-32.jsonl.
set -xeuo pipefail

MODEL_PATH=${MODEL_PATH:-"${HOME}/models/Qwen2.5-Math-7B"}
max_prompt_length=$((1024 * 2))
max_response_length=$((1024 * 28))
n_resp_per_prompt=16
train_prompt_bsz=512
train_prompt_mini_bsz=32

python3 -m verl.trainer.main_ppo \
    data.train_files="${HOME}/data/dapo-math-17k.parquet" \
    data.max_prompt_length=${max_prompt_length} \
    data.max_response_length=${max_response_length} \
    data.train_batch_size=${train_prompt_bsz} \
    algorithm.adv_estimator=grpo \
    algorithm.use_kl_in_reward=False \
    algorithm.filter_groups.enable=True \
    actor_rollout_ref.model.path="${MODEL_PATH}" \
    actor_rollout_ref.actor.strategy=fsdp2 \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=${train_prompt_mini_bsz} \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=${n_resp_per_prompt} \
    actor_rollout_ref.rollout.tensor_model_parallel_size=4 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.80 \
    trainer.logger=['console','file'] \
    trainer.nnodes=4 \
    trainer.n_gpus_per_node=8 \
    trainer.total_training_steps=400
