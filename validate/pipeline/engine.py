"""A rollout engine with continuous batching: the validate policy generating with a KV cache.

The engine holds at most ``slots`` live sequences in a per-slot KV cache. Sequences join (after
a prefill of their context) and leave (at end-of-sequence or the response limit) between decode
iterations; every decode iteration gives each live sequence one token, as the simulator's engine
does. Each token records the version of the weights that drew it, so a sequence that lives
through an in-flight weight update or a partial-rollout resume carries several behaviour
versions. The attention runs the policy's own modules (:class:`~stalesim.validate.train.policy.Policy`)
over the slot cache with a mask of each slot's valid positions, so the log-probs it reports are
those of the policy's full forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from stalesim.validate.train.policy import Policy
from stalesim.validate.train.tasks import DigitTask


@dataclass
class Sequence:
    """One sample: its prompt, the tokens drawn so far, their log-probs and versions."""

    sample_id: int
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    logps: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    finished: bool = False

    @property
    def context_tokens(self) -> int:
        return len(self.prompt) + len(self.tokens)


class ContinuousBatchEngine:
    """Decode iterations over a changing set of live sequences of one policy."""

    def __init__(
        self,
        policy: Policy,
        task: DigitTask,
        slots: int,
        *,
        temperature: float,
        generator: torch.Generator,
        version: int = 0,
    ) -> None:
        self.policy = policy
        self.task = task
        self.slots = slots
        self.temperature = temperature
        self.generator = generator
        self.version = version
        self.max_response = task.max_response_len
        config = policy.config
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        length = task.prompt_len + task.max_response_len
        shape = (len(policy.blocks), slots, self.n_head, length, self.head_dim)
        device = policy.output_weight.device
        dtype = policy.output_weight.dtype
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.cached = torch.zeros(slots, dtype=torch.long, device=device)  # tokens in cache
        self.next_input = torch.zeros(slots, dtype=torch.long, device=device)
        self.live: dict[int, Sequence] = {}
        self.free = list(range(slots - 1, -1, -1))

    # -- the live set ---------------------------------------------------------------------
    @property
    def live_count(self) -> int:
        return len(self.live)

    @property
    def free_slots(self) -> int:
        return len(self.free)

    def context_tokens(self) -> int:
        """KV tokens of the live sequences (prompt plus generated tokens), as the sim counts."""
        return sum(s.context_tokens for s in self.live.values())

    @torch.no_grad()
    def admit(self, sequences: list[Sequence]) -> int:
        """Prefill ``sequences`` into free slots; returns the prefilled tokens (prompt plus any
        tokens generated before, whose KV cache is recomputed by the current weights)."""
        if len(sequences) > len(self.free):
            raise ValueError(f"{len(sequences)} sequences for {len(self.free)} free slots")
        by_length: dict[int, list[tuple[int, Sequence]]] = {}
        for seq in sequences:
            slot = self.free.pop()
            self.live[slot] = seq
            by_length.setdefault(seq.context_tokens, []).append((slot, seq))
        tokens = 0
        for length, members in by_length.items():
            slots = torch.tensor([slot for slot, _ in members], device=self.cached.device)
            context = torch.tensor(
                [seq.prompt + seq.tokens for _, seq in members], device=self.cached.device
            )
            # The last context token is fed by the next decode iteration, which draws the next
            # token from it; the prefill fills the cache with the ones before it.
            self._prefill(slots, context[:, :-1])
            self.cached[slots] = length - 1
            self.next_input[slots] = context[:, -1]
            tokens += length * len(members)
        return tokens

    def _prefill(self, slots: torch.Tensor, context: torch.Tensor) -> None:
        policy = self.policy
        n, t = context.shape
        positions = torch.arange(t, device=context.device)
        x = policy.token_embedding(context) + policy.position_embedding(positions)
        for layer, block in enumerate(policy.blocks):
            h = block.ln1(x)
            q, k, v = block.attn.qkv(h).split(x.shape[-1], dim=2)
            q, k, v = (z.view(n, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))
            self.keys[layer, slots, :, :t] = k
            self.values[layer, slots, :, :t] = v
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + block.attn.proj(y.transpose(1, 2).reshape(n, t, -1))
            x = x + block.mlp(block.ln2(x))

    @torch.no_grad()
    def step(self) -> list[Sequence]:
        """One decode iteration: every live sequence draws one token; returns those that
        finished (end-of-sequence or the response limit) and left the engine."""
        if not self.live:
            return []
        policy = self.policy
        slot_ids = sorted(self.live)
        slots = torch.tensor(slot_ids, device=self.cached.device)
        position = self.cached[slots]
        b = len(slot_ids)
        x = policy.token_embedding(self.next_input[slots]) + policy.position_embedding(position)
        x = x[:, None, :]
        width = int(position.max()) + 1
        allowed = (torch.arange(width, device=x.device)[None, :] <= position[:, None])[
            :, None, None, :
        ]
        for layer, block in enumerate(policy.blocks):
            h = block.ln1(x)
            q, k, v = block.attn.qkv(h).split(x.shape[-1], dim=2)
            q, k, v = (z.view(b, 1, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))
            self.keys[layer][slots, :, position] = k[:, :, 0]
            self.values[layer][slots, :, position] = v[:, :, 0]
            keys = self.keys[layer, slots, :, :width]
            values = self.values[layer, slots, :, :width]
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)
            x = x + block.attn.proj(y.transpose(1, 2).reshape(b, 1, -1))
            x = x + block.mlp(block.ln2(x))
        hidden = policy.ln_f(x)[:, 0]
        logits = hidden @ policy.output_weight.T
        if logits.dtype not in (torch.float32, torch.float64):
            logits = logits.float()
        log_probs = torch.log_softmax(logits / self.temperature, dim=-1)
        cdf = log_probs.exp().cumsum(dim=-1)
        u = torch.rand(b, generator=self.generator, device=self.generator.device).to(cdf.device)
        u = u * cdf[:, -1]
        token = torch.searchsorted(cdf, u[:, None]).clamp(max=logits.shape[-1] - 1).squeeze(1)
        token_logp = log_probs.gather(1, token[:, None]).squeeze(1)
        self.cached[slots] = position + 1
        self.next_input[slots] = token
        finished: list[Sequence] = []
        eos = self.task.eos_id
        for i, slot in enumerate(slot_ids):
            seq = self.live[slot]
            t = int(token[i])
            seq.tokens.append(t)
            seq.logps.append(float(token_logp[i]))
            seq.versions.append(self.version)
            if t == eos or len(seq.tokens) >= self.max_response:
                seq.finished = True
                finished.append(seq)
                del self.live[slot]
                self.free.append(slot)
        return finished

    def preempt(self) -> list[Sequence]:
        """Take every live sequence off the engine, keeping its tokens (not its KV cache)."""
        parked = [self.live[slot] for slot in sorted(self.live)]
        self.free.extend(sorted(self.live, reverse=True))
        self.live.clear()
        return parked

    def load(self, state: dict[str, torch.Tensor], version: int) -> None:
        """New weights between iterations; live sequences keep their KV cache."""
        self.policy.load_state_dict(state)
        self.version = version
