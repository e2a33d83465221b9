"""Model presets: the sizes that set weight bytes, KV-cache bytes per token and FLOPs.

Figures come from each model's ``config.json`` on the Hugging Face Hub (``num_hidden_layers``,
``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``, head dim = hidden / attention
heads unless ``head_dim`` is given) and the parameter counts its model card states.

``hf_names`` lists the Hugging Face repository names (without the organisation, any case) that
share a preset's shape: fine-tunes such as ``-Instruct``, ``-Math`` or ``-Coder`` variants and
distills built on the same base. :func:`preset_for` maps a model id or local path to a preset.
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
    experts: int = Field(default=0, ge=0, description="routed experts per layer (0: dense)")
    experts_per_token: int = Field(default=0, ge=0, description="routed experts each token uses")
    expert_params: float = Field(
        default=0.0, ge=0, description="parameters of all routed experts (the rest is shared)"
    )
    # a lookup key, not a property of the model: left out of dumps (summary.json)
    hf_names: tuple[str, ...] = Field(
        default=(),
        exclude=True,
        description="Hugging Face repository names of this shape (any case)",
    )

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def expert_bytes(self) -> float:
        """Bytes of all routed experts' weights (0 for a dense model)."""
        return self.expert_params * self.dtype_bytes

    def expert_share_touched(self, tokens: float) -> float:
        """Expected share of a layer's routed experts that ``tokens`` tokens use when each
        picks ``experts_per_token`` of ``experts`` uniformly: ``1 - (1 - k/E)^tokens``."""
        if not self.experts:
            return 0.0
        return 1.0 - (1.0 - self.experts_per_token / self.experts) ** tokens

    @property
    def kv_bytes_per_token(self) -> float:
        """Keys and values of every layer for one token."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def attention_dim(self) -> int:
        """Width of the queries (heads x head dim): what attention FLOPs scale with."""
        return self.attention_heads * self.head_dim


def _qwen25(size: str) -> tuple[str, ...]:
    """Qwen2.5 fine-tunes of one size share its shape."""
    return tuple(
        f"Qwen2.5-{kind}{size}{tune}"
        for kind in ("", "Math-", "Coder-")
        for tune in ("", "-Instruct")
    )


MODELS: dict[str, ModelSpec] = {
    # Qwen/Qwen2.5-0.5B: 24 layers, hidden 896, 14 heads of 64, 2 KV heads; 0.49B parameters.
    "qwen2.5-0.5b": ModelSpec(
        name="Qwen2.5-0.5B",
        params=0.49e9,
        active_params=0.49e9,
        layers=24,
        hidden_size=896,
        attention_heads=14,
        kv_heads=2,
        head_dim=64,
        hf_names=_qwen25("0.5B"),
    ),
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
        hf_names=_qwen25("1.5B"),
    ),
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B: Qwen2.5-Math-1.5B's shape (28 layers, hidden
    # 1536, 12 heads of 128, 2 KV heads) with an untied output head (tie_word_embeddings false:
    # 151,936 x 1,536 more weights); 1.78B parameters.
    "deepseek-r1-distill-qwen-1.5b": ModelSpec(
        name="DeepSeek-R1-Distill-Qwen-1.5B",
        params=1.78e9,
        active_params=1.78e9,
        layers=28,
        hidden_size=1536,
        attention_heads=12,
        kv_heads=2,
        head_dim=128,
        hf_names=("DeepSeek-R1-Distill-Qwen-1.5B",),
    ),
    # Qwen/Qwen2.5-3B: 36 layers, hidden 2048, 16 heads of 128, 2 KV heads; 3.09B parameters.
    "qwen2.5-3b": ModelSpec(
        name="Qwen2.5-3B",
        params=3.09e9,
        active_params=3.09e9,
        layers=36,
        hidden_size=2048,
        attention_heads=16,
        kv_heads=2,
        head_dim=128,
        hf_names=_qwen25("3B"),
    ),
    # Qwen/Qwen2.5-7B: 28 layers, hidden 3584, 28 heads of 128, 4 KV heads; 7.61B parameters.
    # DeepSeek-R1-Distill-Qwen-7B is built on Qwen2.5-Math-7B (same shape).
    "qwen2.5-7b": ModelSpec(
        name="Qwen2.5-7B",
        params=7.61e9,
        active_params=7.61e9,
        layers=28,
        hidden_size=3584,
        attention_heads=28,
        kv_heads=4,
        head_dim=128,
        hf_names=(*_qwen25("7B"), "DeepSeek-R1-Distill-Qwen-7B"),
    ),
    # Qwen/Qwen2.5-14B: 48 layers, hidden 5120, 40 heads of 128, 8 KV heads; 14.7B parameters.
    # DeepSeek-R1-Distill-Qwen-14B is built on it.
    "qwen2.5-14b": ModelSpec(
        name="Qwen2.5-14B",
        params=14.7e9,
        active_params=14.7e9,
        layers=48,
        hidden_size=5120,
        attention_heads=40,
        kv_heads=8,
        head_dim=128,
        hf_names=(*_qwen25("14B"), "DeepSeek-R1-Distill-Qwen-14B"),
    ),
    # Qwen/Qwen2.5-32B: 64 layers, hidden 5120, 40 heads of 128, 8 KV heads; 32.5B parameters.
    # DeepSeek-R1-Distill-Qwen-32B and QwQ-32B are built on it.
    "qwen2.5-32b": ModelSpec(
        name="Qwen2.5-32B",
        params=32.5e9,
        active_params=32.5e9,
        layers=64,
        hidden_size=5120,
        attention_heads=40,
        kv_heads=8,
        head_dim=128,
        hf_names=(*_qwen25("32B"), "DeepSeek-R1-Distill-Qwen-32B", "QwQ-32B"),
    ),
    # Qwen/Qwen2.5-72B: 80 layers, hidden 8192, 64 heads of 128, 8 KV heads; 72.7B parameters.
    "qwen2.5-72b": ModelSpec(
        name="Qwen2.5-72B",
        params=72.7e9,
        active_params=72.7e9,
        layers=80,
        hidden_size=8192,
        attention_heads=64,
        kv_heads=8,
        head_dim=128,
        hf_names=_qwen25("72B"),
    ),
    # Qwen/Qwen3-0.6B: 28 layers, hidden 1024, 16 query heads of 128 (head_dim given), 8 KV
    # heads; 0.6B parameters.
    "qwen3-0.6b": ModelSpec(
        name="Qwen3-0.6B",
        params=0.6e9,
        active_params=0.6e9,
        layers=28,
        hidden_size=1024,
        attention_heads=16,
        kv_heads=8,
        head_dim=128,
        hf_names=("Qwen3-0.6B", "Qwen3-0.6B-Base"),
    ),
    # Qwen/Qwen3-1.7B: 28 layers, hidden 2048, 16 query heads of 128, 8 KV heads; 1.7B
    # parameters.
    "qwen3-1.7b": ModelSpec(
        name="Qwen3-1.7B",
        params=1.7e9,
        active_params=1.7e9,
        layers=28,
        hidden_size=2048,
        attention_heads=16,
        kv_heads=8,
        head_dim=128,
        hf_names=("Qwen3-1.7B", "Qwen3-1.7B-Base"),
    ),
    # Qwen/Qwen3-4B: 36 layers, hidden 2560, 32 query heads of 128, 8 KV heads; 4.0B parameters.
    "qwen3-4b": ModelSpec(
        name="Qwen3-4B",
        params=4.0e9,
        active_params=4.0e9,
        layers=36,
        hidden_size=2560,
        attention_heads=32,
        kv_heads=8,
        head_dim=128,
        hf_names=("Qwen3-4B", "Qwen3-4B-Base", "Qwen3-4B-Instruct-2507", "Qwen3-4B-Thinking-2507"),
    ),
    # Qwen/Qwen3-8B: 36 layers, hidden 4096, 32 query heads of 128, 8 KV heads; 8.2B parameters.
    "qwen3-8b": ModelSpec(
        name="Qwen3-8B",
        params=8.2e9,
        active_params=8.2e9,
        layers=36,
        hidden_size=4096,
        attention_heads=32,
        kv_heads=8,
        head_dim=128,
        hf_names=("Qwen3-8B", "Qwen3-8B-Base"),
    ),
    # Qwen/Qwen3-14B: 40 layers, hidden 5120, 40 query heads of 128, 8 KV heads; 14.8B
    # parameters.
    "qwen3-14b": ModelSpec(
        name="Qwen3-14B",
        params=14.8e9,
        active_params=14.8e9,
        layers=40,
        hidden_size=5120,
        attention_heads=40,
        kv_heads=8,
        head_dim=128,
        hf_names=("Qwen3-14B", "Qwen3-14B-Base"),
    ),
    # Qwen/Qwen3-32B: 64 layers, hidden 5120, 64 query heads of 128, 8 KV heads; 32.8B
    # parameters.
    "qwen3-32b": ModelSpec(
        name="Qwen3-32B",
        params=32.8e9,
        active_params=32.8e9,
        layers=64,
        hidden_size=5120,
        attention_heads=64,
        kv_heads=8,
        head_dim=128,
        hf_names=("Qwen3-32B",),
    ),
    # Qwen/Qwen3-30B-A3B: 48 layers, hidden 2048, 32 query heads of 128 (head_dim given), 4 KV
    # heads, 128 experts with 8 active; 30.5B parameters in total, 3.3B active per token.
    # config.json: num_experts 128, num_experts_per_tok 8, moe_intermediate_size 768, no
    # shared expert: each expert is 3 x 2048 x 768 weights, 128 x 48 of them 28.99B; the other
    # 1.51B (attention, embeddings, head, routers) every token uses (1.51 + 28.99/16 = 3.3B).
    "qwen3-30b-a3b": ModelSpec(
        name="Qwen3-30B-A3B",
        params=30.5e9,
        active_params=3.3e9,
        experts=128,
        experts_per_token=8,
        expert_params=3 * 2048 * 768 * 128 * 48,
        layers=48,
        hidden_size=2048,
        attention_heads=32,
        kv_heads=4,
        head_dim=128,
        hf_names=(
            "Qwen3-30B-A3B",
            "Qwen3-30B-A3B-Base",
            "Qwen3-30B-A3B-Instruct-2507",
            "Qwen3-30B-A3B-Thinking-2507",
        ),
    ),
    # Qwen/Qwen3-235B-A22B: 94 layers, hidden 4096, 64 query heads of 128, 4 KV heads, 128
    # experts with 8 active; 235B parameters in total, 22B active per token. config.json:
    # num_experts 128, num_experts_per_tok 8, moe_intermediate_size 1536, no shared expert:
    # 3 x 4096 x 1536 weights per expert, 128 x 94 of them 227.1B; 7.9B shared
    # (7.9 + 227.1/16 = 22.1B active).
    "qwen3-235b-a22b": ModelSpec(
        name="Qwen3-235B-A22B",
        params=235e9,
        active_params=22e9,
        experts=128,
        experts_per_token=8,
        expert_params=3 * 4096 * 1536 * 128 * 94,
        layers=94,
        hidden_size=4096,
        attention_heads=64,
        kv_heads=4,
        head_dim=128,
        hf_names=(
            "Qwen3-235B-A22B",
            "Qwen3-235B-A22B-Instruct-2507",
            "Qwen3-235B-A22B-Thinking-2507",
        ),
    ),
    # meta-llama/Llama-3.2-1B: 16 layers, hidden 2048, 32 heads of 64 (head_dim given), 8 KV
    # heads; 1.24B parameters.
    "llama-3.2-1b": ModelSpec(
        name="Llama-3.2-1B",
        params=1.24e9,
        active_params=1.24e9,
        layers=16,
        hidden_size=2048,
        attention_heads=32,
        kv_heads=8,
        head_dim=64,
        hf_names=("Llama-3.2-1B", "Llama-3.2-1B-Instruct"),
    ),
    # meta-llama/Llama-3.2-3B: 28 layers, hidden 3072, 24 heads of 128, 8 KV heads; 3.21B
    # parameters.
    "llama-3.2-3b": ModelSpec(
        name="Llama-3.2-3B",
        params=3.21e9,
        active_params=3.21e9,
        layers=28,
        hidden_size=3072,
        attention_heads=24,
        kv_heads=8,
        head_dim=128,
        hf_names=("Llama-3.2-3B", "Llama-3.2-3B-Instruct"),
    ),
    # meta-llama/Llama-3.1-8B: 32 layers, hidden 4096, 32 heads of 128, 8 KV heads; 8.03B
    # parameters. DeepSeek-R1-Distill-Llama-8B is built on it.
    "llama-3.1-8b": ModelSpec(
        name="Llama-3.1-8B",
        params=8.03e9,
        active_params=8.03e9,
        layers=32,
        hidden_size=4096,
        attention_heads=32,
        kv_heads=8,
        head_dim=128,
        hf_names=(
            "Llama-3.1-8B",
            "Llama-3.1-8B-Instruct",
            "Meta-Llama-3.1-8B",
            "Meta-Llama-3.1-8B-Instruct",
            "DeepSeek-R1-Distill-Llama-8B",
        ),
    ),
    # meta-llama/Llama-3.1-70B: 80 layers, hidden 8192, 64 heads of 128, 8 KV heads; 70.6B
    # parameters. Llama-3.3-70B-Instruct has the same shape, and DeepSeek-R1-Distill-Llama-70B
    # is built on it.
    "llama-3.1-70b": ModelSpec(
        name="Llama-3.1-70B",
        params=70.6e9,
        active_params=70.6e9,
        layers=80,
        hidden_size=8192,
        attention_heads=64,
        kv_heads=8,
        head_dim=128,
        hf_names=(
            "Llama-3.1-70B",
            "Llama-3.1-70B-Instruct",
            "Meta-Llama-3.1-70B",
            "Meta-Llama-3.1-70B-Instruct",
            "Llama-3.3-70B-Instruct",
            "DeepSeek-R1-Distill-Llama-70B",
        ),
    ),
    # deepseek-ai/deepseek-llm-7b-base (and -chat, verl's default model): 30 layers, hidden
    # 4096, 32 heads of 128, 32 KV heads (no grouping), vocabulary 102,400, MLP 11,008 wide,
    # untied head; 6.91B parameters by those figures (the model card says 7B).
    "deepseek-llm-7b": ModelSpec(
        name="deepseek-llm-7b",
        params=6.91e9,
        active_params=6.91e9,
        layers=30,
        hidden_size=4096,
        attention_heads=32,
        kv_heads=32,
        head_dim=128,
        hf_names=("deepseek-llm-7b-base", "deepseek-llm-7b-chat"),
    ),
}

#: Suffixes a model directory often carries beyond its repository name.
_NAME_SUFFIXES = ("-hf",)


def preset_for(model: str) -> str | None:
    """The preset whose ``hf_names`` include the last component of ``model`` (a Hugging Face
    id such as ``Qwen/Qwen2.5-7B-Instruct`` or a local path such as ``/models/Qwen2.5-Math-7B``;
    any case), or None."""
    name = model.strip().rstrip("/").rsplit("/", 1)[-1].lower()
    for suffix in _NAME_SUFFIXES:
        name = name.removesuffix(suffix)
    for key, spec in MODELS.items():
        if name == key or name in (n.lower() for n in spec.hf_names):
            return key
    return None
