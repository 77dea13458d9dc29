"""TorchScript as a compress format: the format plugin (format.py) and its runtime backend (runtime.py)."""
