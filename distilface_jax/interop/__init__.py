"""Interoperability: Hugging Face checkpoints (import and export) and sentence-transformers folders."""
