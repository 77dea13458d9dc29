"""Data: seeded train / calibration / test splits, batching, and checks against the model input."""

from compress.data.base import Split, Splits, batches, check_against_input, load_data, seeded_splits

__all__ = ["Split", "Splits", "batches", "check_against_input", "load_data", "seeded_splits"]
