"""Split-able early-exit models (lazy: importing this package does not import torch)."""
