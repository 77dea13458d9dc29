"""Runtimes that load and run each format, the targets they run on, and the device agent."""
