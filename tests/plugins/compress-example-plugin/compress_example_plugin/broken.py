"""A plugin module that cannot be imported: compress must report it only when a recipe names it."""

raise ImportError("compress_example_plugin.broken needs a library that is not installed (on purpose)")
