"""One real GRPO training run under controlled staleness: the policy, the task, the optimizer, the warm start and the staleness schedule."""
