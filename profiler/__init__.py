"""Profile ViT blocks on a backend over a grid of the five prunable dimensions and write latency tables."""
