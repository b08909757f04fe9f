"""Images: PIL RGB decoding, the reference's pad-to-square, CLIP ViT-L/14-336 preprocessing, and the decoded RGB
pixels for models whose own processor resizes (`rgb`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mcub.errors import MediaError
from mcub.media import SignalEdit, check_file, edited

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MEAN_RGB = tuple(int(255 * channel) for channel in CLIP_MEAN)
CLIP_IMAGE_SIZE = 336


def decode_image(path: str) -> tuple[Image.Image, dict[str, Any]]:
    """The image as RGB, fully decoded (a truncated or corrupt file fails here)."""
    check_file(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.convert("RGB")
            mode = opened.mode
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise MediaError(path, f"undecodable image ({error})") from None
    return image, {"decoder": "pil", "original_mode": mode, "width": image.width, "height": image.height}


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = CLIP_MEAN_RGB) -> Image.Image:
    """Centre the image on a square canvas of colour `fill` (the reference's `image_aspect_ratio=pad`)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def clip_pixel_values(image: Image.Image, size: int = CLIP_IMAGE_SIZE) -> torch.Tensor:
    """CLIPImageProcessor's steps: shortest side to `size` (bicubic), centre crop, /255, normalise. (3, size, size)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    scaled_long = int(size * long / short)
    new_size = (size, scaled_long) if width <= height else (scaled_long, size)
    resized = image.resize(new_size, resample=Image.Resampling.BICUBIC)
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    array = np.asarray(cropped, dtype=np.float32) / 255.0
    normalised = (array - np.asarray(CLIP_MEAN, dtype=np.float32)) / np.asarray(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))


def _clip_336_pad(path: str, edit: SignalEdit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    image, provenance = decode_image(path)
    image = edited(image, edit, path)
    return {"pixel_values": clip_pixel_values(pad_to_square(image))}, {**provenance, "padded_to_square": True}


def _clip_336(path: str, edit: SignalEdit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    image, provenance = decode_image(path)
    image = edited(image, edit, path)
    return {"pixel_values": clip_pixel_values(image)}, {**provenance, "padded_to_square": False}


def _rgb(path: str, edit: SignalEdit | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    image, provenance = decode_image(path)
    image = edited(image, edit, path)
    return {"pixels": torch.from_numpy(np.array(image, dtype=np.uint8))}, provenance


PREPROCESSING = {
    "clip-336-pad": _clip_336_pad,
    "clip-336": _clip_336,
    "rgb": _rgb,
}
