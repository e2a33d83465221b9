"""The policy: a small decoder-only transformer (nanoGPT-style) with KV-cache sampling.

Pre-norm blocks of causal self-attention and an MLP, learned position embeddings, and an output
projection tied to the token embedding. :meth:`Policy.hidden` returns the final hidden states so
that the learner can compute log-probs with the fused output-projection kernel;
:meth:`Policy.sample` draws responses token by token at a temperature, either with a KV cache or
by recomputing the whole prefix (both consume the same random numbers, so they draw the same
tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from stalesim.common.config_file import StrictModel
from torch import nn

_FULL_PRECISION = (torch.float32, torch.float64)


class PolicyConfig(StrictModel):
    """Shape of the transformer."""

    n_layer: int = Field(2, ge=1, le=256)
    n_head: int = Field(4, ge=1, le=1024)
    n_embd: int = Field(64, ge=8, le=65536)
    mlp_ratio: int = Field(4, ge=1, le=64)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> PolicyConfig:
        # attention splits the width into n_head equal slices
        if self.n_embd % self.n_head:
            raise ValueError(
                f"policy.n_embd={self.n_embd} is not divisible by policy.n_head={self.n_head}"
            )
        return self


@dataclass
class Rollout:
    """Responses sampled by one set of weights.

    ``tokens[n, T]`` are the response tokens (padding after end-of-sequence), ``logp[n, T]``
    their log-probabilities under the sampling weights at the sampling temperature (0 where
    masked), ``mask[n, T]`` is 1 for tokens that count (up to and including end-of-sequence).
    """

    tokens: torch.Tensor
    logp: torch.Tensor
    mask: torch.Tensor


class _KVCache:
    """Keys and values of every layer for the tokens seen so far."""

    def __init__(self, n_layer: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def extend(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class _Attention(nn.Module):
    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor, cache: _KVCache | None, layer: int) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(n, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        past = 0
        if cache is not None:
            past = 0 if cache.keys[layer] is None else cache.keys[layer].shape[2]
            k, v = cache.extend(layer, k, v)
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif t == 1:
            # One new token after the cache may attend to every key: no mask needed.
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            # New queries sit after every cached key; among themselves they are causal.
            total = k.shape[2]
            allowed = torch.ones(t, total, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.proj(y.transpose(1, 2).reshape(n, t, c))


class _Block(nn.Module):
    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = _Attention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, config.mlp_ratio * config.n_embd),
            nn.GELU(),
            nn.Linear(config.mlp_ratio * config.n_embd, config.n_embd),
        )

    def forward(self, x: torch.Tensor, cache: _KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class Policy(nn.Module):
    """Decoder-only transformer over a small vocabulary."""

    def __init__(self, config: PolicyConfig, vocab_size: int, block_size: int) -> None:
        super().__init__()
        self.config = config
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(block_size, config.n_embd)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.apply(self._init_weights)
        # GPT-2's scaled init of residual projections keeps the residual stream's scale.
        for name, param in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def output_weight(self) -> torch.Tensor:
        """The ``[vocab, n_embd]`` output projection (tied to the token embedding)."""
        return self.token_embedding.weight

    def hidden(self, idx: torch.Tensor, cache: _KVCache | None = None) -> torch.Tensor:
        """Final hidden states ``[n, t, n_embd]`` of tokens ``idx[n, t]`` (after the cache)."""
        past = 0 if cache is None or cache.keys[0] is None else cache.keys[0].shape[2]
        t = idx.shape[1]
        if past + t > self.block_size:
            raise ValueError(f"sequence of {past + t} tokens exceeds block_size={self.block_size}")
        positions = torch.arange(past, past + t, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(positions)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, t, vocab]`` for every position of ``idx[n, t]``."""
        return self.hidden(idx) @ self.output_weight.T

    @torch.no_grad()
    def sample(
        self,
        prompts: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float,
        generator: torch.Generator,
        eos_id: int,
        pad_id: int,
        use_cache: bool = True,
    ) -> Rollout:
        """Sample one response per prompt row, stopping each at ``eos_id``.

        Tokens are drawn by inverting the categorical CDF at one uniform number per row and
        step, so the draws depend only on the generator's state and the probabilities: the
        cached and uncached paths give the same tokens.
        """
        n = prompts.shape[0]
        cache = _KVCache(len(self.blocks)) if use_cache else None
        sequence = prompts
        step_input = prompts
        tokens, logps = [], []
        finished = torch.zeros(n, dtype=torch.bool, device=prompts.device)
        for _ in range(max_new_tokens):
            if use_cache:
                h = self.hidden(step_input, cache)[:, -1]
            else:
                h = self.hidden(sequence)[:, -1]
            logits = h @ self.output_weight.T
            # Half-precision logits are sampled in float32; float32 and float64 stay as they are.
            logits = (logits if logits.dtype in _FULL_PRECISION else logits.float()) / temperature
            log_probs = torch.log_softmax(logits, dim=-1)
            cdf = log_probs.exp().cumsum(dim=-1)
            # Drawn where the generator lives (the CPU), so a seed gives the same samples on
            # any device; a CUDA tensor cannot be drawn from a CPU generator.
            u = torch.rand(n, generator=generator, device=generator.device).to(cdf.device)
            u = u * cdf[:, -1]
            token = torch.searchsorted(cdf, u[:, None]).clamp(max=logits.shape[-1] - 1).squeeze(1)
            token_logp = log_probs.gather(1, token[:, None]).squeeze(1)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            tokens.append(token)
            logps.append(torch.where(finished, torch.zeros_like(token_logp), token_logp))
            finished = finished | (token == eos_id)
            step_input = token[:, None]
            sequence = torch.cat([sequence, step_input], dim=1)
        tokens_t = torch.stack(tokens, dim=1)
        logp_t = torch.stack(logps, dim=1)
        # A token counts if no end-of-sequence came strictly before it.
        eos_before = torch.cumsum((tokens_t == eos_id).int(), dim=1) - (tokens_t == eos_id).int()
        mask = (eos_before == 0).to(logp_t.dtype)
        return Rollout(tokens=tokens_t, logp=logp_t * mask, mask=mask)
