"""Standard Inception metrics from a local weights file (aigc_synth.metrics.inception).

No real Inception weights exist offline: the network is torch-fidelity's architecture with random
(He-normal) weights, saved in the supported file layout. Inception at 299 px costs ~0.5 s per image
on one thread here, so the default suite runs the network on 9 images in all; a ``slow`` test runs
12 vs 12 images.
Every test runs with downloads and network connections patched to fail.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import socket
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from aigc_synth.data.procedural import render_scenes
from aigc_synth.metrics.distribution import frechet_distance, kernel_inception_distance
from aigc_synth.metrics.inception import (
    InceptionFeatures,
    InceptionWeightsError,
    inception_metrics,
    inception_score,
    save_random_inception_weights,
)


def _no_download(*args, **kwargs):
    raise AssertionError(f"a download / network connection was attempted: {args[:2]}")


@pytest.fixture(scope="module", autouse=True)
def block_downloads():
    import torch.hub

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "load_state_dict_from_url", _no_download)
        mp.setattr(torch.hub, "download_url_to_file", _no_download)
        mp.setattr(tf_inception, "load_state_dict_from_url", _no_download)
        mp.setattr(urllib.request, "urlopen", _no_download)
        mp.setattr(urllib.request, "urlretrieve", _no_download)
        mp.setattr(socket, "create_connection", _no_download)
        mp.setattr(socket.socket, "connect", _no_download)
        yield


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On the loaded 2-core machine two torch threads spin-wait on each other: 1 thread is ~5× faster here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, block_downloads):
    return save_random_inception_weights(tmp_path_factory.mktemp("inception") / "weights-inception-random.pth", seed=0)


@pytest.fixture(scope="module")
def images():
    """(real, fake): procedural 64-px scenes, numpy (n, 64, 64, 3) uint8; the default suite uses 2 reals."""
    real = render_scenes(np.stack([np.arange(12) % 5, np.arange(12) % 3, np.arange(12) % 3], 1), range(12)).images
    fake = render_scenes(np.stack([4 - np.arange(12) % 5, 2 - np.arange(12) % 3, np.arange(12) % 3], 1),
                         range(100, 112)).images
    return real, fake


def test_logits_include_the_fc_bias_of_the_pool3_features(weights, images):
    inc = InceptionFeatures.from_weights(weights)
    pooled = []
    inc.network.AvgPool.register_forward_hook(lambda mod, inp, out: pooled.append(out.flatten(1)))
    logits = inc.logits(images[0][:1])
    assert logits.shape == (1, 1008) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    fc = inc.network.fc
    torch.testing.assert_close(logits, pooled[0] @ fc.weight.T + fc.bias, rtol=1e-4, atol=1e-4)


def test_inception_metrics_of_a_set_against_itself(weights, images, monkeypatch):
    """End to end from the local path: the same 2 images as one numpy (n, H, W, 3) batch and as an
    iterable of torch (1, 3, H, W) batches. FID ≈ 0, batching/layout change nothing, TF1 resize used."""
    real = images[0][:2]
    seen, resizes = [], []
    original_run, original_resize = InceptionFeatures.features_and_logits, tf_inception.interpolate_bilinear_2d_like_tensorflow1x

    def run_spy(self, *args, **kwargs):
        seen.append(original_run(self, *args, **kwargs))
        return seen[-1]

    def resize_spy(x, *args, **kwargs):
        resizes.append((tuple(x.shape), kwargs.get("size"), kwargs.get("align_corners")))
        return original_resize(x, *args, **kwargs)

    monkeypatch.setattr(InceptionFeatures, "features_and_logits", run_spy)
    monkeypatch.setattr(tf_inception, "interpolate_bilinear_2d_like_tensorflow1x", resize_spy)
    as_torch = torch.from_numpy(real).permute(0, 3, 1, 2)
    out = inception_metrics(weights, real, [as_torch[:1], as_torch[1:]], batch_size=2, kid_subsets=3,
                            kid_subset_size=2, is_splits=1)

    assert set(out) == {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "feature_extractor_id", "num_real", "num_fake"}
    assert all(math.isfinite(out[k]) for k in ("fid", "kid_mean", "kid_std", "is_mean", "is_std"))
    assert out["num_real"] == out["num_fake"] == 2 and out["is_mean"] > 1.0 and out["is_std"] == 0  # one split
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert out["feature_extractor_id"].endswith(f"sha256:{digest[:16]}") and "inception-v3" in out["feature_extractor_id"]

    (f_real, l_real), (f_fake, _) = seen
    assert f_real.shape == f_fake.shape == (2, 2048) and l_real.shape == (2, 1008)
    assert f_real.std(0).mean() > 1e-3  # the random network still tells the images apart
    torch.testing.assert_close(f_fake, f_real, rtol=1e-4, atol=1e-5)  # batch size 2 vs 1, NHWC numpy vs NCHW torch
    scale = float(f_real.var(0).sum())
    assert out["fid"] <= 1e-6 * scale + 1e-9, (out["fid"], scale)
    # every pass: torch-fidelity's TF1 bilinear resize, 64 px → 299, align_corners=False
    assert resizes == [((2, 3, 64, 64), (299, 299), False), ((1, 3, 64, 64), (299, 299), False),
                       ((1, 3, 64, 64), (299, 299), False)]


def test_inception_metrics_real_vs_fake(weights, images):
    real, fake = images
    out = inception_metrics(weights, real[:2], fake[:2], batch_size=2, kid_subsets=3, kid_subset_size=2, is_splits=2)
    assert all(math.isfinite(out[k]) for k in ("fid", "kid_mean", "kid_std", "is_mean", "is_std"))
    assert out["fid"] > 0 and out["is_mean"] >= 1.0 - 1e-9 and out["is_std"] >= 0


@pytest.mark.slow
def test_inception_metrics_real_vs_fake_and_batch_independence(weights, images):
    """12 vs 12 images, batch 5 vs 12, IS over the standard 10 splits (52 s here, one thread)."""
    real, fake = images
    inc = InceptionFeatures.from_weights(weights)
    f5, f12 = inc.features(real, batch_size=5), inc.features(real, batch_size=12)
    assert f5.shape == (12, 2048)
    torch.testing.assert_close(f5, f12, rtol=1e-4, atol=1e-5)
    out = inception_metrics(inc, real, fake, batch_size=6, kid_subsets=10, kid_subset_size=8)
    assert all(math.isfinite(out[k]) for k in ("fid", "kid_mean", "kid_std", "is_mean", "is_std"))
    assert out["fid"] > 0 and out["is_mean"] >= 1.0 - 1e-9 and out["is_std"] >= 0
    assert out["fid"] == pytest.approx(frechet_distance(f12, inc.features(fake, batch_size=12)), rel=1e-3)


def test_tf1_resize_is_not_torch_antialiased_resize(images):
    x = torch.from_numpy(images[0][:1]).permute(0, 3, 1, 2).double()
    tf1 = tf_inception.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    aa = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
    # TF1 samples at x·(in/out) (no half-pixel offset): pixel (0, 0) is the input's, and the grids differ
    torch.testing.assert_close(tf1[..., 0, 0], x[..., 0, 0])
    assert (tf1 - aa).abs().max() > 5


def test_fid_kid_is_maths_match_torch_fidelity():
    """Our float64 FD / KID on features (what inception_metrics uses) agree with torch-fidelity's maths."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kernel_poly, mmd2

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, 64, generator=gen)
    b = torch.randn(250, 64, generator=gen) * 1.2 + 0.3
    ref_fid = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), verbose=False)
    assert frechet_distance(a, b) == pytest.approx(ref_fid["frechet_inception_distance"], rel=1e-6)
    kw = {"kid_kernel_poly_degree": 3, "kid_kernel_poly_gamma": None, "kid_kernel_poly_coef0": 1}
    x, y = a[:250].double().numpy(), b.double().numpy()
    ref_kid = mmd2(kernel_poly(x, x, **kw), kernel_poly(x, y, **kw), kernel_poly(y, y, **kw))
    ours, _ = kernel_inception_distance(a[:250], b, subsets=1, subset_size=250)  # one subset = the whole sets
    assert ours == pytest.approx(float(ref_kid), rel=1e-9)
    # IS: exp(E_x KL(p(y|x) || p(y))) per split, softmax over all 1008 logits
    logits = torch.randn(40, 1008, generator=gen) * 3
    p = logits.double().softmax(1)
    manual = float((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean().exp())
    assert inception_score(logits, splits=1)[0] == pytest.approx(manual, rel=1e-12)
    mean, std = inception_score(logits, splits=10)
    assert mean >= 1 and std >= 0
    with pytest.raises(ValueError, match="at least splits=10"):
        inception_score(logits[:5], splits=10)


def test_missing_weights_file_is_a_clear_error_and_never_downloads(tmp_path):
    missing = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(InceptionWeightsError, match="Inception weights not found at .*never downloads"):
        InceptionFeatures.from_weights(missing)
    with pytest.raises(InceptionWeightsError, match="never downloads"):
        inception_metrics(missing, np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_weights_file_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = tmp_path / "evil.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "x": _Payload(str(marker))}, evil)
    loads = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        loads.append((type(f).__name__, kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(InceptionWeightsError, match="refusing to load"):
        InceptionFeatures.from_weights(evil)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(InceptionWeightsError, match="refusing to load .*not a plain-tensor state dict"):
        InceptionFeatures.from_weights(raw)
    assert not marker.exists()
    assert loads and all(weights_only is True for _, weights_only in loads)


def test_other_layouts_are_refused_with_the_mismatching_keys(tmp_path):
    # torchvision's ImageNet inception_v3 layout: 1000 classes and an auxiliary head
    other = tmp_path / "inception_v3_google.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000),
                "AuxLogits.fc.weight": torch.zeros(1000, 768)}, other)
    with pytest.raises(InceptionWeightsError, match=r"not the FID Inception network .*missing.*unexpected \(AuxLogits.*"
                                                    r"wrong shape \(fc\.bias \(1000,\)→\(1008,\)"):
        InceptionFeatures.from_weights(other)
    notdict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], notdict)
    with pytest.raises(InceptionWeightsError, match="not a state dict"):
        InceptionFeatures.from_weights(notdict)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(InceptionWeightsError, match="garbage.pth"):
        InceptionFeatures.from_weights(garbage)


def test_pytorch_fid_layout_loads(tmp_path, monkeypatch):
    """pytorch-fid's network is torchvision's Inception3(num_classes=1008, aux_logits=False) with its own
    blocks: same parameter names and shapes; its file predates BatchNorm's num_batches_tracked."""
    import torchvision

    torch.manual_seed(1)
    tv = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    state = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pt_inception-like.pth"
    torch.save(state, path)
    unsafe_loads = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        obj = real_load(f, *args, **kwargs)
        if not kwargs.get("weights_only"):
            unsafe_loads.append(obj)
        return obj

    monkeypatch.setattr(torch, "load", spy)
    inc = InceptionFeatures.from_weights(path)
    # torch-fidelity's constructor does torch.load(weights_only=False): it only ever gets our placeholder
    assert unsafe_loads == [None]
    loaded = inc.network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
