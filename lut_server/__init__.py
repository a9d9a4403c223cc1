"""Latency lookup tables for ViT pruning: the table format, its interpolation, the HTTP service and its client.

Nothing in this package imports torch, so the server installs small.
"""

__version__ = "0.1.0"
