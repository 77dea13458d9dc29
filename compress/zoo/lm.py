"""A small GPT-style decoder language model (character level), exported at a fixed context length.

Written with plain matmuls and softmax (no scaled_dot_product_attention, no nn.MultiheadAttention)
so that ONNX export, OpenVINO and the LiteRT (TFLite) converter all hold it, and so that the
pruning stage sees ordinary Linear layers.

The causal mask is applied after the softmax: the probabilities of future positions are zeroed
(a boolean mask buffer) and each row renormalized. That is exactly a masked softmax, but no tensor in
the graph holds -inf or -1e9: a static int8 quantizer that calibrates the softmax input (ONNX
Runtime's QDQ does) would otherwise spend its whole range on the mask and flatten the real scores.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: separate q, k, v projections and an output projection."""

    def __init__(self, dim: int, heads: int, context: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        causal = torch.tril(torch.ones(context, context, dtype=torch.bool)).view(1, 1, context, context)
        self.register_buffer("mask", causal, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        shape = (b, t, self.heads, self.head_dim)
        q = self.q(x).view(shape).transpose(1, 2)  # (b, heads, t, head_dim)
        k = self.k(x).view(shape).transpose(1, 2)
        v = self.v(x).view(shape).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        # where (not a multiply): LiteRT's int8 softmax needs its own fixed output scale, which a
        # quantized multiply right after it would override.
        weights = torch.where(self.mask[:, :, :t, :t], torch.softmax(scores, dim=-1), 0.0)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        return self.proj(out)


class MLP(nn.Module):
    """fc1 -> GELU (tanh approximation) -> fc2; fc1's output channels are what pruning removes."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, dim: int, heads: int, context: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, context)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, dim * mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Token + learned position embeddings, `layers` pre-LN blocks, a final LayerNorm and a linear
    head. Input: int64 token ids (batch, context); output: next-token logits (batch, context, vocab)."""

    def __init__(self, vocab_size: int, context: int, dim: int = 128, layers: int = 4, heads: int = 4,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.context = context
        # The token embedding is a bias-free Linear on one-hot ids (the same function as an
        # nn.Embedding table): LiteRT's int8 EMBEDDING_LOOKUP kernel refuses the asymmetric weights
        # its dynamic-range converter gives an embedding, while a fully connected layer quantizes
        # in every format. The one-hot product costs context x vocab x dim MACs, a few percent.
        self.tok_emb = nn.Linear(vocab_size, dim, bias=False)
        self.pos_emb = nn.Parameter(torch.zeros(context, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, context, mlp_ratio) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)
        self.register_buffer("vocab", torch.arange(vocab_size), persistent=False)
        self.apply(self._init)
        nn.init.normal_(self.pos_emb, 0.0, 0.02)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: Tensor) -> Tensor:
        t = ids.shape[1]
        one_hot = (ids.unsqueeze(-1) == self.vocab).to(self.pos_emb.dtype)  # (batch, t, vocab)
        x = self.tok_emb(one_hot) + self.pos_emb[:t]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def tiny_gpt(vocab_size: int | None = None, context: int = 64, dim: int = 128, layers: int = 4, heads: int = 4,
             mlp_ratio: int = 4) -> TinyGPT:
    """TinyGPT sized for the built-in `text` data source: `vocab_size` defaults to its alphabet."""
    if vocab_size is None:
        from compress.data.text import VOCAB_SIZE

        vocab_size = VOCAB_SIZE
    return TinyGPT(vocab_size, context, dim, layers, heads, mlp_ratio)
