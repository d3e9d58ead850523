"""Accelerating Augmentation Invariance Pretraining (Lin, Wu, Wei, Morgado; NeurIPS 2024)."""
