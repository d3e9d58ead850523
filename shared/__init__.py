"""Infrastructure shared by every project: config, distributed, launch, checkpoint, logging, data, metrics.

Nothing here is a paper's model or loss.
"""
