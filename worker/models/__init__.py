"""The model layer: one module per model session, all built on ``base.InferenceModel``."""
