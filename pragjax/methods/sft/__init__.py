"""Supervised fine-tuning and pretraining: the causal-LM loss builder (`loss`) and the recipe (`recipe`)."""
