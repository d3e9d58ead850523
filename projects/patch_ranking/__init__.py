"""Patch Ranking (WACV 2025): token pruning of CLIP as ranking prediction."""
