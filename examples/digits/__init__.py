"""The end-to-end digits demo behind `make demo`: profile, serve, prune a small ViT over HTTP, compact, measure."""
