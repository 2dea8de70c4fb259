#!/usr/bin/env python
"""Why do the precipitation layer's gates open or shut? Asks a training state's own networks.

    python scripts/diagnose_precipitation.py runs/scratch_pi/state.pt --scenes data/scenes/train

For a ``layout_gan`` state trained with ``model.precipitation=true``, on ``--batches`` × 32 training
samples (the run's own data order, mixed conditions), per weather:

* ``gates``: the learnt gates (mean over times, traffic levels and particle units);
* ``D(gate=g)``: the discriminator's mean score of the EMA generator's images with *every* gate
  forced to g (same latents and layouts) — does the discriminator prefer particles on or off?
* ``grad adv`` / ``grad aux``: the gradient of the generator's adversarial term and of its auxiliary
  classification term (AC-GAN head, ``aux_class_weight``) with respect to that weather's gates,
  summed (raw generator, training mode, as in a training step). Positive: that term shuts the gates.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc_synth.data.scene_images import SceneImageDataset  # noqa: E402
from aigc_synth.io.checkpoint import load_checkpoint  # noqa: E402
from aigc_synth.models.layout_gan import PrecipitationLayer  # noqa: E402
from aigc_synth.models.registry import build_discriminator, build_generator  # noqa: E402
from aigc_synth.scenes.dataset import read_scenes  # noqa: E402
from aigc_synth.schema import ConditionSchema  # noqa: E402
from aigc_synth.training.steps import aux_class_loss  # noqa: E402

GATE_LEVELS = (0.0, 0.15, 0.5, 0.88)


def diagnose(state_path: str, scenes: str, batches: int = 8, batch_size: int = 32, seed: int = 0) -> dict[str, dict]:
    """Per weather value: learnt gate mean, discriminator score per forced gate level, and the two
    generator loss terms' summed gradients on that weather's gates (see the module docstring)."""
    state = load_checkpoint(state_path)
    mc = state["model_config"]
    if mc.get("family") != "layout_gan" or not mc.get("precipitation"):
        raise SystemExit(f"{state_path}: a layout_gan state trained with model.precipitation=true is needed")
    schema = ConditionSchema.from_dict(state["schema"])
    disc = build_discriminator("layout_gan", schema.cardinalities, **mc)  # the builders pick their own keys
    disc.load_state_dict(state["D"])
    raw = build_generator("layout_gan", schema.cardinalities, factors=schema.factors, **mc)
    raw.load_state_dict(state["G"])
    ema = build_generator("layout_gan", schema.cardinalities, factors=schema.factors, **mc)
    ema.load_state_dict(state["G_ema"])
    ema.eval()
    data = SceneImageDataset(read_scenes(scenes), seed=seed, resolution=mc["resolution"], schema=schema)
    cards = list(schema.cardinalities)
    n_weather = cards[0]
    forced = {}
    for level in GATE_LEVELS:
        g = copy.deepcopy(ema)
        with torch.no_grad():
            g.precipitation.gate.fill_(-1.0 if level == 0 else math.log(level / (1 - level)) / PrecipitationLayer.GATE_GAIN)
        forced[level] = g
    score_sum = {level: torch.zeros(n_weather) for level in GATE_LEVELS}
    count = torch.zeros(n_weather)
    grads = {"adv": torch.zeros(n_weather), "aux": torch.zeros(n_weather)}
    z_gen = torch.Generator().manual_seed(seed)
    raw.train()
    disc.train()
    for b in range(batches):
        batch = data.batch(range(b * batch_size, (b + 1) * batch_size))
        codes, layout = batch["codes"], batch["layout"].float()
        z = torch.randn(batch_size, mc["z_dim"], generator=z_gen)
        weather = codes[:, 0]
        count += torch.bincount(weather, minlength=n_weather).float()
        with torch.no_grad():
            for level, g in forced.items():
                s = disc(g(z, codes, layout), codes, layout).reshape(batch_size, -1).mean(1)  # a multi-scale critic: mean of its scales
                score_sum[level] += torch.zeros(n_weather).index_add_(0, weather, s)
        logits, class_logits = disc(raw(z, codes, layout), codes, layout, return_aux=True)
        for name, loss in (("adv", -logits.mean()), ("aux", mc["aux_class_weight"] * aux_class_loss(class_logits, codes))):
            (grad,) = torch.autograd.grad(loss, raw.precipitation.gate, retain_graph=True)
            grads[name] += grad.view(n_weather, -1).sum(dim=1)
    gates = raw.precipitation.gate_table().flatten(1).mean(dim=1)
    out = {}
    for w, value in enumerate(schema.values(schema.names[0])):
        out[value] = {"n": int(count[w]), "gate": round(float(gates[w]), 3),
                      **{f"D(gate={level})": round(float(score_sum[level][w] / max(count[w], 1)), 3) for level in GATE_LEVELS},
                      "grad_adv": round(float(grads["adv"][w]), 4), "grad_aux": round(float(grads["aux"][w]), 4)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("state")
    p.add_argument("--scenes", required=True, help="the run's training scenes (data.scenes)")
    p.add_argument("--batches", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = diagnose(a.state, a.scenes, a.batches)
    keys = list(next(iter(rows.values())))
    print("| weather | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for value, r in rows.items():
        print(f"| {value} | " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
