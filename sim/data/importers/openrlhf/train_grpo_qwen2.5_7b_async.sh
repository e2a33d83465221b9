#!/bin/bash
# An OpenRLHF 0.11 launch script written for stalesim (not shipped by OpenRLHF): GRPO on
# Qwen2.5-7B-Instruct with 8 vLLM engines and an 8-GPU actor, asynchronous training with a
# one-batch queue. Flags as openrlhf/cli/train_ppo_ray.py 0.11.2 defines them.
set -x

MODEL_PATH="Qwen/Qwen2.5-7B-Instruct"
SAVE_PATH="./ckpt/qwen2.5-7b-grpo-async"
ROLLOUT_BS=128
N_SAMPLES=8

ray job submit --address="http://127.0.0.1:8265" \
   -- python3 -m openrlhf.cli.train_ppo_ray \
   --ref.num_nodes 1 \
   --ref.num_gpus_per_node 8 \
   --actor.num_nodes 1 \
   --actor.num_gpus_per_node 8 \
   --train.colocate_actor_ref \
   --vllm.num_engines 8 \
   --vllm.tensor_parallel_size 1 \
   --vllm.gpu_memory_utilization 0.9 \
   --vllm.enable_prefix_caching \
   --train.async_enable \
   --train.async_queue_size 1 \
   --actor.model_name_or_path ${MODEL_PATH} \
   --ckpt.output_dir ${SAVE_PATH} \
   --data.prompt_dataset OpenRLHF/prompt-collection-v0.1 \
   --data.input_key context_messages \
   --data.max_len 9216 \
   --rollout.max_new_tokens 8192 \
   --rollout.batch_size ${ROLLOUT_BS} \
   --rollout.n_samples_per_prompt ${N_SAMPLES} \
   --train.batch_size $((ROLLOUT_BS * N_SAMPLES / 4)) \
   --train.max_epochs 1 \
   --train.num_episodes 1 \
   --algo.advantage.estimator group_norm \
   --algo.kl.init_coef 1e-3 \
   --algo.kl.use_loss \
   --algo.kl.estimator k3 \
   --actor.adam.lr 1e-6 \
   --ds.zero_stage 3 \
   --ds.packing_samples
