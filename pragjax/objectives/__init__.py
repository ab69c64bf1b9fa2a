"""Pure loss functions on log-probabilities (no models, no tokenizers)."""
