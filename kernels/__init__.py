"""Triton kernels for GRPO training, each beside its plain-torch reference."""
