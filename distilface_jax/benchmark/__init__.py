"""Benchmarks: `python -m distilface_jax.benchmark` (harness.py) times the real training step
against the PyTorch peer (peer_torch.py), STS and encode; hlo_anatomy.py reads the compiled step."""
