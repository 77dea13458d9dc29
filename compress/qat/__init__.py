"""Quantization-aware training: fine-tune with int8 fake quantization (NNCF) before the formats quantize."""
