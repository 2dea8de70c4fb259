"""Standard Inception metrics (FID, KID, IS) from a **local** weights file; nothing is downloaded.

The network is torch-fidelity 0.4.0's ``FeatureExtractorInceptionV3``: the TF 2015-12-05 Inception
graph ported to PyTorch, whose forward resizes uint8 images to 299×299 with
``interpolate_bilinear_2d_like_tensorflow1x`` (TF1's bilinear resize, as the reference FID code does;
not torch's antialiased resize), maps pixels to [-1, 1] and returns the 2048-d pool3 features and the
1008-class logits.

Weights: ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity's file). pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` holds the same network under the same parameter names
(torchvision's ``Inception3`` layout with 1008 classes and no auxiliary head), so it loads too; any
other layout (e.g. torchvision's ImageNet ``inception_v3``: 1000 classes, aux head) is refused with
the list of mismatching keys.

Safety: torch-fidelity's constructor would download when given no path and reads a given path with
``torch.load(weights_only=False)`` (a pickle that can run code). So the user's file never reaches it:
we read the file once (sha256 + ``torch.load(..., map_location="cpu", weights_only=True)`` from the
bytes), build the network from a harmless in-memory placeholder, and ``load_state_dict`` ourselves.

Maths:

* FID / KID use :mod:`aigc_synth.metrics.distribution` on the pool3 features (float64). FID is the
  same formula as torch-fidelity's; we take Tr((Σ₁Σ₂)^½) from a symmetric eigendecomposition
  instead of ``eigvals`` of the non-symmetric Σ₁Σ₂ (same eigenvalues, real by construction, no
  spurious imaginary parts when N < 2048), and the project's domain-feature metrics use the same code.
  KID has the same kernel (x·y/d + 1)³ and unbiased MMD² estimator as torch-fidelity; the random
  subsets differ (torch generator, seed 0) and the std is the sample std (ddof = 1); the subset size
  is clamped to the smaller set size instead of raising.
* IS follows torch-fidelity exactly (its ``isc_features_to_metric``): softmax over all **1008**
  logits computed **without the fc bias** (``logits_unbiased``, as in the original TF Inception
  Score code), samples shuffled with seed 2020, exp(E_x KL(p(y|x) ‖ p(y))) per split over 10
  splits, mean and population std of the splits.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigc_synth.errors import EvaluationError, first_line
from aigc_synth.metrics.distribution import frechet_distance, kernel_inception_distance

SUPPORTED_FILES = ("weights-inception-2015-12-05-6726825d.pth (torch-fidelity)",
                   "pt_inception-2015-12-05-6726825d.pth (pytorch-fid)")
FEATURE_DIM = 2048
NUM_LOGITS = 1008
INPUT_SIZE = 299


class InceptionWeightsError(EvaluationError):
    """The weights file is missing, unreadable, unsafe or of another network."""


def _network_class():
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Net(FeatureExtractorInceptionV3):
        # The parent constructor ends with torch.load(path, weights_only=False) + load_state_dict.
        # We hand it a pickled ``None`` we wrote ourselves and skip that load; weights come later.
        def load_state_dict(self, state_dict, *args, **kwargs):
            if state_dict is None:
                return None
            return super().load_state_dict(state_dict, *args, **kwargs)

    return _Net


def _build_network(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The torch-fidelity Inception architecture, default (random) init; on ``meta``: no memory, no init cost.

    Never downloads: torch-fidelity only downloads when given no weights path, and gets a placeholder.
    """
    placeholder = io.BytesIO()
    torch.save(None, placeholder)
    placeholder.seek(0)
    with torch.device(device):
        return _network_class()("aigc_synth-inception-v3", ["2048", "logits_unbiased", "logits"],
                                feature_extractor_weights_path=placeholder)


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if not path.is_file():
        raise InceptionWeightsError(
            f"Inception weights not found at {path}; aigc_synth never downloads weights. Put one of "
            f"{', '.join(SUPPORTED_FILES)} there (see README, 'Standard Inception metrics (offline)').")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InceptionWeightsError(
            f"refusing to load {path}: it is not a plain-tensor state dict ({first_line(exc, 200)})") from None
    except Exception as exc:  # truncated file, not a torch file, ...
        raise InceptionWeightsError(f"cannot read Inception weights {path}: {type(exc).__name__}: {first_line(exc, 200)}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise InceptionWeightsError(f"{path} is not a state dict (name → tensor); expected one of {', '.join(SUPPORTED_FILES)}")
    if obj and all(k.startswith("module.") for k in obj):  # saved from a DataParallel wrapper
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, digest


def _check_layout(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    optional = {k for k in expected if k.endswith("num_batches_tracked")}  # old torch files lack them
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                shown = ", ".join(f"{k} {tuple(state[k].shape)}→{tuple(expected[k].shape)}" if label == "wrong shape"
                                  else k for k in keys[:4])
                parts.append(f"{len(keys)} {label} ({shown}{', …' if len(keys) > 4 else ''})")
        raise InceptionWeightsError(
            f"{path} is not the FID Inception network ({'; '.join(parts)}); supported files: {', '.join(SUPPORTED_FILES)}")


def _uint8_nchw(images: Any) -> torch.Tensor:
    """uint8 images → (n, 3, H, W) tensor. numpy: (n, H, W, 3) like the renderer/PNGs (or (n, 3, H, W));
    torch: (n, 3, H, W) (or (n, H, W, 3)). The channel axis is the one of size 3."""
    is_numpy = isinstance(images, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(images)) if is_numpy else images
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a numpy array or a torch tensor, got {type(images).__name__}")
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images (0-255), got {x.dtype}")
    if x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
        raise ValueError(f"expected images of shape (n, 3, H, W) or (n, H, W, 3), got {tuple(x.shape)}")
    channels_last = x.shape[-1] == 3 and (x.shape[1] != 3 or is_numpy)
    return x.permute(0, 3, 1, 2) if channels_last else x


def _batches(images: Any, batch_size: int) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts = [images] if isinstance(images, (np.ndarray, torch.Tensor)) else images
    if not isinstance(parts, Iterable):
        raise TypeError(f"images must be an array, a tensor or an iterable of them, got {type(images).__name__}")
    for part in parts:
        x = _uint8_nchw(part)
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size]


class InceptionFeatures:
    """The FID Inception-v3 network loaded from a local file (see the module docstring).

    >>> inc = InceptionFeatures.from_weights("weights/weights-inception-2015-12-05-6726825d.pth")
    >>> feats = inc.features(images_uint8, batch_size=32)      # (n, 2048) float32, pool3
    >>> logits = inc.logits(images_uint8)                      # (n, 1008) float32, with the fc bias

    Images: uint8, any size (resized to 299×299 with TF1's bilinear resize), numpy (n, H, W, 3) or
    torch (n, 3, H, W), or an iterable of such batches. ``batch_size`` only bounds memory: results
    agree across batch sizes up to float rounding.
    """

    def __init__(self, network: torch.nn.Module, weights_id: str, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.feature_extractor_id = weights_id

    @classmethod
    def from_weights(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "InceptionFeatures":
        """Load ``path`` safely (``weights_only=True``, never a download); raise :class:`InceptionWeightsError`."""
        path = Path(path).expanduser()
        state, digest = _read_state_dict(path)
        network = _build_network("meta")
        expected = network.state_dict()
        _check_layout(state, expected, path)
        state = {k: state[k].to(expected[k].dtype) if k in state else torch.zeros((), dtype=torch.long)
                 for k in expected}  # old files lack BatchNorm's num_batches_tracked (unused in eval)
        network.load_state_dict(state, strict=True, assign=True)  # meta tensors → the file's tensors
        network.requires_grad_(False)
        import torch_fidelity

        return cls(network, f"inception-v3-2015-12-05/torch-fidelity-{torch_fidelity.__version__}/sha256:{digest[:16]}", device)

    @torch.inference_mode()
    def _run(self, images: Any, batch_size: int, progress: bool = False, desc: str = "inception") -> dict[str, torch.Tensor]:
        from tqdm import tqdm

        outs: dict[str, list[torch.Tensor]] = {name: [] for name in self.network.features_list}
        for batch in tqdm(_batches(images, batch_size), desc=desc, unit="batch", disable=not progress):
            for name, value in zip(self.network.features_list, self.network(batch.to(self.device))):
                outs[name].append(value.float().cpu())
        if not outs["2048"]:
            raise ValueError("no images")
        return {name: torch.cat(values) for name, values in outs.items()}

    def features(self, images: Any, batch_size: int = 32) -> torch.Tensor:
        """2048-d pool3 features, (n, 2048) float32 — the FID/KID features."""
        return self._run(images, batch_size)["2048"]

    def logits(self, images: Any, batch_size: int = 32, bias: bool = True) -> torch.Tensor:
        """(n, 1008) logits; ``bias=False`` gives the bias-free logits the Inception Score uses."""
        return self._run(images, batch_size)["logits" if bias else "logits_unbiased"]

    def features_and_logits(self, images: Any, batch_size: int = 32, progress: bool = False,
                            desc: str = "inception") -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: (pool3 features (n, 2048), bias-free IS logits (n, 1008))."""
        out = self._run(images, batch_size, progress, desc)
        return out["2048"], out["logits_unbiased"]


def inception_score(logits_unbiased: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """torch-fidelity's IS on bias-free 1008-class logits: (mean, std) over ``splits`` (shuffle seed 2020)."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    if len(logits_unbiased) < splits:
        raise ValueError(f"the Inception Score needs at least splits={splits} images, got {len(logits_unbiased)}")
    out = isc_features_to_metric(logits_unbiased, splits=splits, shuffle=True, rng_seed=2020)
    return out["inception_score_mean"], out["inception_score_std"]


def inception_metrics(weights_path: str | os.PathLike | InceptionFeatures, real_images: Any, fake_images: Any, *,
                      batch_size: int = 32, kid_subsets: int = 100, kid_subset_size: int = 1000,
                      is_splits: int = 10, device: str | torch.device | None = None,
                      progress: bool = False) -> dict[str, Any]:
    """FID, KID and IS of ``fake_images`` against ``real_images`` with the standard Inception network.

    Args:
        weights_path: local file, ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity) or
            pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``. Never downloaded: a missing
            file raises :class:`InceptionWeightsError`; the file is read with ``weights_only=True``.
            An already loaded :class:`InceptionFeatures` is accepted too (no reload; ``device`` ignored).
        real_images, fake_images: uint8 images of any size (resized to 299 with TF1's bilinear
            resize): numpy (n, H, W, 3), torch (n, 3, H, W), or an iterable of such batches.
        batch_size: images per forward pass (memory only; results do not depend on it beyond rounding).
        kid_subsets, kid_subset_size: KID subsets (the size is clamped to the smaller set).
        is_splits: Inception Score splits (needs at least that many fake images).
        device: torch device; default ``"cuda"`` when available, else ``"cpu"``.
        progress: show tqdm bars.

    Returns:
        ``{"fid", "kid_mean", "kid_std", "is_mean", "is_std", "feature_extractor_id", "num_real",
        "num_fake"}``; IS is of the fake images; ``feature_extractor_id`` names the network and the
        weights file's sha256 prefix. FID is biased upward at small n (prefer KID below a few thousand).
    """
    if isinstance(weights_path, InceptionFeatures):
        net = weights_path
    else:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        net = InceptionFeatures.from_weights(weights_path, device=device)
    real_feats, _ = net.features_and_logits(real_images, batch_size, progress, "inception (real)")
    fake_feats, fake_logits = net.features_and_logits(fake_images, batch_size, progress, "inception (fake)")
    is_mean, is_std = inception_score(fake_logits, is_splits)
    kid_mean, kid_std = kernel_inception_distance(real_feats, fake_feats, subsets=kid_subsets, subset_size=kid_subset_size)
    return {
        "fid": frechet_distance(real_feats, fake_feats),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "is_mean": is_mean,
        "is_std": is_std,
        "feature_extractor_id": net.feature_extractor_id,
        "num_real": int(len(real_feats)),
        "num_fake": int(len(fake_feats)),
    }


def save_random_inception_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a **randomly initialised** network in the supported file layout — for tests only.

    Convolutions get He-normal weights so activations keep an O(1) scale through the ~90 layers
    (PyTorch's default init shrinks them to ~0); metrics computed with it are meaningless.
    """
    torch.manual_seed(seed)
    net = _build_network()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=4.0 / FEATURE_DIM ** 0.5)
                torch.nn.init.normal_(m.bias, std=0.1)
    path = Path(path)
    torch.save({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, path)
    return path
