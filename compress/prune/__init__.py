"""Structured channel pruning with torch-pruning."""
