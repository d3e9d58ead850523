"""Evaluation protocols used by several papers."""
