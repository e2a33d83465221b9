"""Real asynchronous GRPO training that measures the staleness-learning-rate law."""
