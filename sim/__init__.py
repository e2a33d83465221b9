"""Discrete-event model of an asynchronous RL cluster: rollout engines, buffer, learner, weight sync.

Never imports torch.
"""
