import json
import pickle

import numpy as np
import pytest
import torch

from dataclasses import fields

from aigc_synth.config import DataConfig, TrainConfig
from aigc_synth.config import compose
from aigc_synth.errors import UsageError
from aigc_synth.models.configs import CGANConfig
from aigc_synth.models.registry import config_for
from aigc_synth.io.checkpoint import load_checkpoint
from aigc_synth.models.exported import load_generator
from aigc_synth.errors import CheckpointError
from aigc_synth.models.registry import build_discriminator, build_generator
from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema
from aigc_synth.training.augment import diff_augment
from aigc_synth.training.trainer import train

CARD = DEFAULT_SCHEMA.cardinalities


@pytest.mark.parametrize("family", ["cgan", "dcgan"])
@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_generator_and_discriminator_shapes(family, resolution):
    g = build_generator(family, CARD, resolution=resolution, z_dim=16, base_channels=4)
    d = build_discriminator(family, CARD, resolution=resolution, d_base_channels=4)
    codes = torch.tensor([[0, 1, 2], [4, 0, 0]])
    x = g(torch.randn(2, 16), codes)
    assert x.shape == (2, 3, resolution, resolution)
    assert x.abs().max() <= 1
    assert d(x, codes).shape == (2,)


def test_unsupported_resolution_is_rejected():
    with pytest.raises(ValueError, match="32, 64 or 128"):
        build_generator("cgan", CARD, resolution=48)


def test_cgan_uses_spectral_norm_and_projection():
    d = build_discriminator("cgan", CARD, resolution=32, d_base_channels=4)
    names = [n for n, _ in d.named_parameters()]
    assert any("parametrizations.weight" in n for n in names)  # spectral norm
    assert len(d.projections) == len(CARD)  # one projection per factor


def test_auxiliary_classifier_heads_only_when_asked():
    plain = build_discriminator("cgan", CARD, resolution=32, d_base_channels=4)
    assert plain.aux_heads is None
    with pytest.raises(ValueError, match="without aux_head"):
        plain(torch.rand(2, 3, 32, 32), torch.zeros(2, 3, dtype=torch.long), return_aux=True)
    d = build_discriminator("cgan", CARD, resolution=32, d_base_channels=4, aux_class_weight=0.5)
    logit, class_logits = d(torch.rand(2, 3, 32, 32), torch.zeros(2, 3, dtype=torch.long), return_aux=True)
    assert logit.shape == (2,)
    assert [c.shape for c in class_logits] == [(2, n) for n in CARD]  # one head per factor


def test_diffaugment_refuses_colour_policy_and_keeps_shape():
    x = torch.rand(4, 3, 32, 32)
    y = diff_augment(x, ("translation", "cutout"), torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(x, y)
    assert (y == 0).float().mean() > 0.1  # cutout zeroed a patch
    with pytest.raises(ValueError, match="keep the labels"):
        diff_augment(x, ("color",))


TINY = dict(resolution=32, z_dim=16, base_channels=8, d_base_channels=8, embed_dim=16, ema_start=1)


def _model(family="cgan", **overrides):
    """The family's own config with the tiny sizes it understands (a DCGAN has no embed_dim)."""
    from aigc_synth.models.registry import get_family

    known = {f.name for f in fields(get_family(family).config)}
    return config_for(family, **{k: v for k, v in {**TINY, **overrides}.items() if k in known})


def _train(out, steps, family="cgan", **model):
    cfg = TrainConfig(out_dir=str(out), steps=steps, batch_size=8, log_every=1, sample_every=2, checkpoint_every=2, threads=1, eval_every=0,
                      device="cpu")
    return train(cfg, _model(family, **model), DataConfig(), progress=False)


def test_train_step_logs_grid_and_checkpoints(tmp_path):
    path = _train(tmp_path, 2)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(np.isfinite(r["loss_d"]) and np.isfinite(r["loss_g"]) for r in log)
    grid = tmp_path / "samples" / "step_000002.png"
    from PIL import Image

    assert Image.open(grid).size == (8 * 32, 45 * 32)  # one row per condition combination
    gen = load_generator(path)
    assert gen.schema == DEFAULT_SCHEMA and gen.family == "cgan" and gen.resolution == 32
    assert load_checkpoint(tmp_path / "state.pt")["step"] == 2


def test_training_device_is_checked_before_any_work(tmp_path):
    """train.device: auto means CUDA only where there is one; a device this machine lacks, or a name
    that is no device, is refused before the run directory exists; the export records the device."""
    from aigc_synth.training.trainer import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    bad = ["tpu", "gpu0", "mps"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for name in bad:
        cfg = TrainConfig(out_dir=str(tmp_path / name), steps=1, device=name, eval_every=0)
        with pytest.raises(ValueError, match="train.device"):
            train(cfg, _model(), DataConfig(), progress=False)
        assert not (tmp_path / name).exists()
    path = _train(tmp_path / "ok", 1)
    assert load_checkpoint(path)["meta"]["device"] == "cpu"


def test_loader_workers_train_bit_identically(tmp_path):
    """Batches built ahead by loader processes are the loop's own batches: same weights after the run;
    a negative count is refused before any work."""
    cfg = dict(steps=3, batch_size=8, log_every=1, sample_every=10, checkpoint_every=10, threads=1, eval_every=0, device="cpu")
    inline = load_generator(train(TrainConfig(out_dir=str(tmp_path / "a"), **cfg), _model(), DataConfig(), progress=False))
    ahead = load_generator(train(TrainConfig(out_dir=str(tmp_path / "b"), loader_workers=2, **cfg), _model(), DataConfig(),
                                 progress=False))
    for (k, v), (_, w) in zip(inline.module.state_dict().items(), ahead.module.state_dict().items()):
        assert torch.equal(v, w), k
    with pytest.raises(ValueError, match="loader_workers"):
        train(TrainConfig(out_dir=str(tmp_path / "c"), loader_workers=-1, **cfg), _model(), DataConfig(), progress=False)
    assert not (tmp_path / "c").exists()


def test_resume_equals_uninterrupted_training(tmp_path):
    straight = load_generator(_train(tmp_path / "a", 4))
    _train(tmp_path / "b", 2)
    resumed = load_generator(_train(tmp_path / "b", 4))
    for (k, v), (_, w) in zip(straight.module.state_dict().items(), resumed.module.state_dict().items()):
        assert torch.equal(v, w), k


def test_auxiliary_classifier_is_trained_and_changes_the_generator(tmp_path):
    from aigc_synth.training.steps import TrainContext, gan_step

    torch.manual_seed(0)
    cfg = CGANConfig(**TINY, aux_class_weight=1.0, diffaugment=False)
    D = build_discriminator("cgan", CARD, **vars(cfg))
    G = build_generator("cgan", CARD, **vars(cfg))
    before = [h.parametrizations.weight.original.detach().clone() for h in D.aux_heads]
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    real = torch.rand(8, 3, 32, 32) * 2 - 1
    codes = torch.tensor([[i % c for c in CARD] for i in range(8)])
    gan_step(TrainContext(G=G, D=D, opt_g=opt_g, opt_d=opt_d, cfg=cfg, aug_gen=torch.Generator()), real, codes)
    assert all(not torch.equal(b, h.parametrizations.weight.original) for b, h in zip(before, D.aux_heads))
    # same seed, same data, no auxiliary term: the generator ends elsewhere
    path_ac = _train(tmp_path / "ac", 2, aux_class_weight=1.0)
    path_plain = _train(tmp_path / "plain", 2)
    a, b = load_generator(path_ac), load_generator(path_plain)
    assert a.model_config == b.model_config  # the exported generator does not carry the training-only switch
    assert any(not torch.equal(v, w) for v, w in zip(a.module.state_dict().values(), b.module.state_dict().values()))


def test_auxiliary_classifier_is_refused_outside_cgan(tmp_path):
    # a DCGAN's own config has no such key: Hydra refuses it as a usage error
    with pytest.raises(UsageError, match="aux_class_weight"):
        compose("train", ["model=dcgan_baseline", "model.aux_class_weight=1.0"])
    with pytest.raises(TypeError, match="aux_class_weight"):
        config_for("dcgan", aux_class_weight=1.0)
    with pytest.raises(ValueError, match="aux_class_weight"):
        _train(tmp_path / "neg", 1, aux_class_weight=-1.0)
    assert not (tmp_path / "log.jsonl").exists() and not (tmp_path / "neg").exists()  # nothing written


def test_fine_tune_starts_from_the_source_weights_and_adds_the_classifier(tmp_path):
    source = load_generator(_train(tmp_path / "src", 2))
    cfg = TrainConfig(out_dir=str(tmp_path / "ft0"), steps=0, batch_size=8, threads=1, eval_every=0,
                      init_from=str(tmp_path / "src" / "state.pt"))
    start = load_generator(train(cfg, _model(aux_class_weight=0.5), DataConfig(), progress=False))
    for (k, v), w in zip(source.module.state_dict().items(), start.module.state_dict().values()):
        assert torch.equal(v, w), k  # step 0 of the fine-tune is the source model
    cfg.out_dir, cfg.steps = str(tmp_path / "ft1"), 1
    tuned = load_generator(train(cfg, _model(aux_class_weight=0.5), DataConfig(), progress=False))
    assert any(not torch.equal(v, w) for v, w in zip(source.module.state_dict().values(), tuned.module.state_dict().values()))
    # the exported EMA keeps averaging from the source's EMA (not copied from the raw G for ema_start steps)
    from aigc_synth.io.checkpoint import load_checkpoint

    raw_g = load_checkpoint(tmp_path / "ft1" / "state.pt")["G"]
    src, ema = dict(source.module.named_parameters()), dict(tuned.module.named_parameters())  # buffers are copied
    moved_g = sum(float((raw_g[k] - src[k]).abs().sum()) for k in src)
    moved_ema = sum(float((ema[k] - src[k]).abs().sum()) for k in src)
    assert 0 < moved_ema < 0.01 * moved_g  # ema_decay 0.999: one step moves the EMA a thousandth of G's move
    cfg.out_dir = str(tmp_path / "bad")
    with pytest.raises(CheckpointError, match="base_channels"):
        train(cfg, _model(base_channels=16), DataConfig(), progress=False)
    cfg.init_from, cfg.out_dir = str(tmp_path / "missing.pt"), str(tmp_path / "never")
    with pytest.raises(FileNotFoundError, match="init_from"):
        train(cfg, _model(), DataConfig(), progress=False)
    assert not (tmp_path / "never").exists()


def test_state_from_before_a_new_config_key_still_resumes(tmp_path):
    from aigc_synth.io.checkpoint import save_checkpoint

    _train(tmp_path, 2)
    state = load_checkpoint(tmp_path / "state.pt")
    del state["model_config"]["aux_class_weight"]  # as written before the key existed
    save_checkpoint(state, tmp_path / "state.pt")
    _train(tmp_path, 3)
    assert load_checkpoint(tmp_path / "state.pt")["step"] == 3
    _train(tmp_path, 4, lr_g=1e-4)  # a hyper-parameter may change on resume (this run's value applies)
    assert load_checkpoint(tmp_path / "state.pt")["step"] == 4
    with pytest.raises(CheckpointError, match="base_channels"):
        _train(tmp_path, 5, base_channels=16)  # an architecture change is refused (one list: Family.arch_keys)


def test_dcgan_baseline_trains(tmp_path):
    path = _train(tmp_path, 2, family="dcgan", z_dim=100)
    assert load_generator(path).family == "dcgan"


def test_export_roundtrip_gives_same_images(tiny_checkpoint):
    from aigc_synth.sampling.sampler import generate_images

    a = load_generator(tiny_checkpoint)
    b = load_generator(tiny_checkpoint)
    codes, seeds = np.array([[3, 2, 2]] * 3), np.array([1, 2, 3])
    assert np.array_equal(generate_images(a, codes, seeds), generate_images(b, codes, seeds))
    assert a.model_id == b.model_id and len(a.model_id) == 64


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


def test_pickled_code_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "aigc_synth.generator/v1", "payload": _Payload(str(marker))}, bad)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_generator(bad)
    assert not marker.exists()
    # plain pickle too (not a torch zip)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError, match="refusing to load .*not a plain-tensor checkpoint"):
        load_generator(raw)
    assert not marker.exists()


def test_truncated_and_wrong_kind_checkpoints(tmp_path, tiny_checkpoint):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_generator(cut)
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "missing.pt")
    state = tmp_path / "state.pt"
    torch.save({"format": "aigc_synth.train_state/v1", "step": 1}, state)
    with pytest.raises(CheckpointError, match="not an exported generator"):
        load_generator(state)


def test_checkpoint_for_another_schema_loads(tmp_path):
    from tests.helpers import make_tiny_checkpoint

    schema = ConditionSchema.from_dict({"season": ["summer", "winter"], "road": ["urban", "highway"]})
    gen = load_generator(make_tiny_checkpoint(tmp_path / "s.pt", schema=schema))
    assert gen.schema == schema


def test_kl_to_standard_normal_matches_torch_distributions():
    from aigc_synth.models.cvae import kl_to_standard_normal

    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(5, 7), torch.ones(5, 7))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(kl_to_standard_normal(mu, logvar), expected, atol=1e-5)
    assert torch.allclose(kl_to_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_cvae_trains_exports_and_serves_like_a_generator(tmp_path):
    from aigc_synth.sampling.sampler import generate_images

    path = _train(tmp_path, 3, family="cvae")
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {"loss_rec", "loss_kl"} <= set(log[-1])
    gen = load_generator(path)
    assert gen.family == "cvae"
    images = generate_images(gen, np.array([[3, 2, 2], [0, 0, 0]]), np.array([1, 2]))
    assert images.shape == (2, 32, 32, 3)


def test_training_logs_kid_and_accuracy_and_keeps_the_best_generator(tmp_path):
    from aigc_synth.models.exported import read_generator_header

    cfg = TrainConfig(out_dir=str(tmp_path), steps=4, batch_size=8, log_every=1, sample_every=4, checkpoint_every=4,
                      threads=1, eval_every=2, eval_samples=60, best_metric="kid")
    train(cfg, _model(), DataConfig(), progress=False)
    evals = [r for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines()) if "eval_kid" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:
        assert np.isfinite(r["eval_kid"]) and np.isfinite(r["eval_fd"]) and 0 <= r["eval_accuracy_weather"] <= 1
    best = min(evals, key=lambda r: r["eval_kid"])
    meta = read_generator_header(tmp_path / "best_generator.pt")["meta"]
    assert meta["best"] == {"value": best["eval_kid"], "step": best["step"], "metric": "kid"}
    with pytest.raises(ValueError, match="best_metric"):
        train(TrainConfig(out_dir=str(tmp_path / "x"), steps=1, eval_every=1, best_metric="loss"), _model(),
              DataConfig(), progress=False)
