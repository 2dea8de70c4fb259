"""Deterministic image sampling from an exported generator.

``generate_images(gen, codes, seeds)`` returns uint8 images that are a pure function of
(model, code, seed) per sample: latents come from per-sample CPU generators, and the network runs
on fixed-size micro-batches (padded at the tail). Fixed shapes matter because BLAS/oneDNN choose
kernels by shape (a batch of 1 takes a GEMV path with another summation order), and a 1-ulp
difference can flip a rounded pixel; with a fixed shape each row is computed the same way
whatever its neighbours. Verified bit-exact across batch sizes and positions in ``tests/``.

``encode_image(image, fmt, quality)`` turns those pixels into the stored bytes (``job.image_format``:
png, jpeg or webp) with every encoder option fixed, so bytes stay a pure function of the sample.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from aigc_synth.models.exported import LoadedGenerator
from aigc_synth.seeds import latents_for_seeds

#: Rows per network call. Part of the determinism contract: changing it may change output bits.
COMPUTE_BATCH = 32
#: PNG settings are fixed so the same pixels always give the same bytes (and sha256).
PNG_COMPRESS_LEVEL = 6
#: ``job.image_format`` values. png is lossless; jpeg and webp are lossy at ``job.image_quality``.
IMAGE_FORMATS = ("png", "jpeg", "webp")
DEFAULT_IMAGE_FORMAT, DEFAULT_IMAGE_QUALITY = "png", 90
#: Lossy encoder settings, fixed for the same reason as the PNG level: every option that could
#: change the bytes is spelled out instead of left to a library default that may move. JPEG: 4:2:0
#: chroma subsampling (libjpeg's usual), baseline (not progressive), no Huffman optimisation;
#: WebP: lossy, ``method`` 4 (libwebp's speed/size default). Both encoders are single-threaded and
#: deterministic for a given Pillow + libjpeg-turbo / libwebp (checked in tests/test_image_formats.py).
JPEG_SETTINGS = {"subsampling": "4:2:0", "progressive": False, "optimize": False}
WEBP_SETTINGS = {"method": 4, "lossless": False}


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float (B, 3, H, W) → uint8 (B, H, W, 3), rounding half up."""
    return ((images.clamp(-1, 1) + 1) * 127.5 + 0.5).floor().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate_images(gen: LoadedGenerator, codes: np.ndarray, seeds: np.ndarray,
                    device: str | torch.device = "cpu", compute_batch: int = COMPUTE_BATCH,
                    layouts: np.ndarray | None = None) -> np.ndarray:
    """uint8 (n, R, R, 3) images for per-sample ``codes`` (n, F) and ``seeds`` (n,); layout
    families also take per-sample ``layouts`` (n, L, R, R) (:mod:`aigc_synth.data.layout`)."""
    from aigc_synth.models.registry import get_family

    needs_layout = get_family(gen.family).layout
    if needs_layout and layouts is None:
        raise ValueError(f"a {gen.family} generator needs a layout per sample (render scenes first)")
    if not needs_layout and layouts is not None:
        raise ValueError(f"a {gen.family} generator takes no layout")
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    out = np.empty((n, gen.resolution, gen.resolution, 3), dtype=np.uint8)
    z_all = latents_for_seeds(seeds, gen.z_dim)
    for start in range(0, n, compute_batch):
        stop = min(start + compute_batch, n)
        z = torch.zeros(compute_batch, gen.z_dim)
        c = torch.zeros(compute_batch, codes.shape[1], dtype=torch.int64)
        z[: stop - start] = z_all[start:stop]
        c[: stop - start] = torch.from_numpy(codes[start:stop])
        if needs_layout:  # padded like z and codes: fixed shapes keep every row's bits batch-independent
            lay = torch.zeros(compute_batch, *layouts.shape[1:])
            lay[: stop - start] = torch.from_numpy(np.asarray(layouts[start:stop], np.float32))
            images = gen.module(z.to(device), c.to(device), lay.to(device))
        else:
            images = gen.module(z.to(device), c.to(device))
        out[start:stop] = to_uint8(images[: stop - start])
    return out


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) → PNG bytes (deterministic for a given Pillow/zlib)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def encode_image(image: np.ndarray, fmt: str = DEFAULT_IMAGE_FORMAT, quality: int = DEFAULT_IMAGE_QUALITY) -> bytes:
    """uint8 (H, W, 3) → ``fmt`` bytes (png | jpeg | webp; ``quality`` 1-100 for the lossy two).

    ``png`` is exactly :func:`encode_png` (quality ignored), so png jobs keep their pinned bytes.
    """
    if fmt == "png":
        return encode_png(image)
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=int(quality), **JPEG_SETTINGS)
    elif fmt == "webp":
        Image.fromarray(image).save(buf, format="WEBP", quality=int(quality), **WEBP_SETTINGS)
    else:
        raise ValueError(f"image format must be one of {list(IMAGE_FORMATS)}, got {fmt!r}")
    return buf.getvalue()


def image_encoding_record(fmt: str = DEFAULT_IMAGE_FORMAT, quality: int = DEFAULT_IMAGE_QUALITY) -> dict:
    """What a manifest's determinism record adds for ``fmt``: nothing for png (its level is already
    recorded, and png manifests must keep their bytes), else the format, quality, fixed encoder
    settings and codec library version (lossy bytes depend on the codec build, like PNG's on zlib)."""
    if fmt == "png":
        return {}
    from PIL import features

    if fmt == "jpeg":
        turbo = features.version("libjpeg_turbo")  # None for a Pillow built against plain libjpeg
        settings, codec = JPEG_SETTINGS, f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version('jpg')}"
    else:
        settings, codec = WEBP_SETTINGS, f"libwebp {features.version('webp')}"
    return {"image_format": fmt, "image_quality": int(quality), f"{fmt}_settings": dict(settings), "codec": codec}
