"""Model presets: the sizes that set weight bytes, KV-cache bytes per token and FLOPs.

Figures come from each model's ``config.json`` on the Hugging Face Hub (``num_hidden_layers``,
``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``, head dim = hidden / attention
heads unless ``head_dim`` is given) and the parameter counts its model card states.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelSpec(BaseModel):
    """A decoder-only language model, dense or mixture-of-experts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    params: float = Field(gt=0, description="total parameters")
    active_params: float = Field(gt=0, description="parameters used per token (MoE: < params)")
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0, description="residual stream width (tensor-parallel traffic)")
    attention_heads: int = Field(gt=0, description="query heads")
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    dtype_bytes: int = Field(default=2, gt=0)

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        """Keys and values of every layer for one token."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def attention_dim(self) -> int:
        """Width of the queries (heads x head dim): what attention FLOPs scale with."""
        return self.attention_heads * self.head_dim


MODELS: dict[str, ModelSpec] = {
    # Qwen/Qwen2.5-1.5B: 28 layers, hidden 1536, 12 heads of 128, 2 KV heads; 1.54B parameters.
    "qwen2.5-1.5b": ModelSpec(
        name="Qwen2.5-1.5B",
        params=1.54e9,
        active_params=1.54e9,
        layers=28,
        hidden_size=1536,
        attention_heads=12,
        kv_heads=2,
        head_dim=128,
    ),
    # Qwen/Qwen2.5-7B: 28 layers, hidden 3584, 28 heads of 128, 4 KV heads; 7.61B parameters.
    "qwen2.5-7b": ModelSpec(
        name="Qwen2.5-7B",
        params=7.61e9,
        active_params=7.61e9,
        layers=28,
        hidden_size=3584,
        attention_heads=28,
        kv_heads=4,
        head_dim=128,
    ),
    # Qwen/Qwen2.5-32B: 64 layers, hidden 5120, 40 heads of 128, 8 KV heads; 32.5B parameters.
    "qwen2.5-32b": ModelSpec(
        name="Qwen2.5-32B",
        params=32.5e9,
        active_params=32.5e9,
        layers=64,
        hidden_size=5120,
        attention_heads=40,
        kv_heads=8,
        head_dim=128,
    ),
    # meta-llama/Llama-3.1-8B: 32 layers, hidden 4096, 32 heads of 128, 8 KV heads; 8.03B
    # parameters.
    "llama-3.1-8b": ModelSpec(
        name="Llama-3.1-8B",
        params=8.03e9,
        active_params=8.03e9,
        layers=32,
        hidden_size=4096,
        attention_heads=32,
        kv_heads=8,
        head_dim=128,
    ),
    # meta-llama/Llama-3.1-70B: 80 layers, hidden 8192, 64 heads of 128, 8 KV heads; 70.6B
    # parameters.
    "llama-3.1-70b": ModelSpec(
        name="Llama-3.1-70B",
        params=70.6e9,
        active_params=70.6e9,
        layers=80,
        hidden_size=8192,
        attention_heads=64,
        kv_heads=8,
        head_dim=128,
    ),
    # Qwen/Qwen3-30B-A3B: 48 layers, hidden 2048, 32 query heads of 128 (head_dim given), 4 KV
    # heads, 128 experts with 8 active; 30.5B parameters in total, 3.3B active per token.
    "qwen3-30b-a3b": ModelSpec(
        name="Qwen3-30B-A3B",
        params=30.5e9,
        active_params=3.3e9,
        layers=48,
        hidden_size=2048,
        attention_heads=32,
        kv_heads=4,
        head_dim=128,
    ),
}
