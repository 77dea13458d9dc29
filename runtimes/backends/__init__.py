"""Runtime backends: one module per runtime, named after it, each self-contained (numpy and its
runtime only) so the agent can load it by path on a device. A backend class has:

  name, install_hint; requires (import names all needed) and/or requires_any (alternatives);
  distributions (whose version is reported); optionally formats (formats it loads besides those
  whose plugin names it) and files(model) (the files a multi-file model is made of, for copying);
  __init__(model, threads, device) with device.kind / device.index; version; input_names (or None
  to feed by position); run(feeds) -> list of arrays; input_specs() -> [(name, shape, dtype)];
  optionally timed_call(feeds) -> a callable timed on inputs set once.

Its runtime library is imported in __init__, never at module level: the agent sets thread counts
before that import.
"""
