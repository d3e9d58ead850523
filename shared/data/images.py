from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from shared.data.audio import MediaError


def load_image(path: str | os.PathLike) -> Image.Image:
    """An RGB PIL image, fully decoded (a truncated file fails here, not later in a transform)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise MediaError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
