"""An example third-party plugin for compress: the `scale_logits` stage (and a deliberately broken one)."""

__version__ = "0.1.0"
