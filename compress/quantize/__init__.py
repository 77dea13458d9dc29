"""int8 quantization: one intent in the recipe, realized per format by that format's quantizer."""
