"""compress: prune, distill and int8-quantize a PyTorch model, export it, verify it."""

__version__ = "0.1.0"
