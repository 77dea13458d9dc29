"""Exporters: a torch model to one deployment format, in fp32."""
