"""Model-set recipes (demo, real, presets), building a set, and cross-validating a recipe."""
