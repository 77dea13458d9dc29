"""Small reference models the recipes and tests use."""
