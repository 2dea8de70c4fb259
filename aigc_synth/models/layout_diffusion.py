"""Layout-conditioned diffusion on pixels: the family the field deploys (GLIGEN, LayoutDiffusion,
GeoDiffusion, MagicDrive), small enough to train on a CPU.

The network is ``diffusers``' ``UNet2DModel``: its input is the noisy image concatenated with the
scene's layout raster (:mod:`aigc_synth.data.layout`, the same 6 channels as ``layout_gan``) and a
"layout given" channel (with ``layout_unknown_flags``, also one "unknown" plane per layout channel:
:func:`~aigc_synth.data.annotation_layout.with_unknown_flags`); the condition codes (weather × time × traffic) enter as one class index of
the UNet's class embedding. Classifier-free guidance: in training the condition is replaced by the
null class and the layout by zeros (flag 0) with probability ``condition_dropout``; at sampling the
two predictions are mixed with scale ``guidance`` (1 = conditional only, no second pass).

Objective: v-prediction on a cosine (``squaredcos_cap_v2``) schedule of 1,000 steps. Sampling:
DPM-Solver++ (second order, ``diffusers.DPMSolverMultistepScheduler``), deterministic: the image is a
pure function of the initial noise (``z``, drawn from the sample's own seed by the job) and the
conditions, and every tensor has a fixed shape per micro-batch, so rows never depend on their batch.

``guidance_t_min`` / ``guidance_t_max`` (diffusion timesteps, 0..1000; default the whole range) limit
guidance to the solver steps inside that interval and sample the others conditionally only.

``forward(z, codes, layout)`` runs the whole sampler, so the job machinery, serving and evaluation
call it exactly as they call a GAN generator (``z_dim`` = 3 × R × R). ``configure_sampling`` sets the
options a job or request may change (``steps``, ``guidance``, its interval; on GPUs ``bf16`` autocast and
``channels_last``, ``compile``: off by default, for GPU nodes), each a part of the job's fingerprint.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from aigc_synth.data.annotation_layout import with_unknown_flags
from aigc_synth.data.layout import LAYOUT_CHANNELS

NUM_TRAIN_TIMESTEPS = 1000
BETA_SCHEDULE = "squaredcos_cap_v2"
#: What a job (``job.sampling``) or a served request may set, with the type each must have.
SAMPLING_OPTIONS = {"steps": int, "guidance": float, "guidance_t_min": int, "guidance_t_max": int, "bf16": bool,
                    "channels_last": bool, "compile": bool}


class LayoutDiffusion(nn.Module):
    """``forward(z, codes, layout) → images in [-1, 1]`` through ``sampling_steps`` DPM-Solver++ steps."""

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, base_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2, 2, 4), layers_per_block: int = 1, sampling_steps: int = 16,
                 guidance: float = 2.0, factors: Any = None, layout_unknown_flags: bool = False,
                 guidance_t_min: int = 0, guidance_t_max: int = NUM_TRAIN_TIMESTEPS):
        from diffusers import UNet2DModel

        super().__init__()
        # one "unknown" plane per layout channel beside the raster (data/annotated_images.py)
        self.layout_unknown_flags = bool(layout_unknown_flags)
        layout_inputs = len(LAYOUT_CHANNELS) * (2 if self.layout_unknown_flags else 1)
        self.cardinalities = [int(c) for c in cardinalities]
        self.num_conditions = math.prod(self.cardinalities)  # + 1: the null class of classifier-free guidance
        self.resolution, self.z_dim = int(resolution), 3 * int(resolution) ** 2
        down = ("DownBlock2D",) * len(channel_mult)
        self.unet = UNet2DModel(sample_size=resolution, in_channels=3 + layout_inputs + 1, out_channels=3,
                                block_out_channels=tuple(int(base_channels) * int(m) for m in channel_mult),
                                layers_per_block=int(layers_per_block), down_block_types=down,
                                up_block_types=("UpBlock2D",) * len(channel_mult), num_class_embeds=self.num_conditions + 1,
                                norm_num_groups=8)
        self.sampling = {"steps": int(sampling_steps), "guidance": float(guidance), "guidance_t_min": 0,
                         "guidance_t_max": NUM_TRAIN_TIMESTEPS, "bf16": False, "channels_last": False, "compile": False}
        self.configure_sampling(guidance_t_min=int(guidance_t_min), guidance_t_max=int(guidance_t_max))
        # the torch.compile'd UNet (the ``compile`` option), built at its first use; in a dict, so it is not
        # registered as a submodule (its weights are the UNet's, and state_dict keys must not change)
        self._compiled: dict[str, Any] = {}

    # -- conditions ------------------------------------------------------------------------------------
    def condition_index(self, codes: torch.Tensor) -> torch.Tensor:
        """(n, F) codes → (n,) class index, mixed radix in the schema's factor order."""
        index = torch.zeros(codes.shape[0], dtype=torch.long, device=codes.device)
        for f, card in enumerate(self.cardinalities):
            index = index * card + codes[:, f].long()
        return index

    def _velocity(self, x_t: torch.Tensor, t: torch.Tensor, classes: torch.Tensor, layout: torch.Tensor,
                  given: torch.Tensor) -> torch.Tensor:
        """The UNet's v prediction; ``given`` (n,) is 1 where the layout is shown, 0 where it is dropped."""
        g = given.view(-1, 1, 1, 1).to(x_t.dtype)
        inp = torch.cat([x_t, layout.to(x_t.dtype) * g, g.expand(-1, 1, *x_t.shape[2:])], dim=1)
        unet = self.unet
        if self.sampling["compile"] and not self.training:
            if "unet" not in self._compiled:
                self._compiled["unet"] = torch.compile(self.unet)
            unet = self._compiled["unet"]
        return unet(inp, t, class_labels=classes).sample

    # -- training ----------------------------------------------------------------------------------------
    def diffusion_loss(self, real: torch.Tensor, codes: torch.Tensor, layout: torch.Tensor, generator: torch.Generator,
                       condition_dropout: float) -> torch.Tensor:
        """v-prediction MSE on a random timestep per image; noise, timesteps and dropout come from ``generator``
        (a CPU stream: the same draws on any device)."""
        from diffusers import DDPMScheduler

        n, device = real.shape[0], real.device
        layout = with_unknown_flags(layout) if self.layout_unknown_flags else layout
        schedule = DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE, prediction_type="v_prediction")
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (n,), generator=generator).to(device)
        noise = torch.randn(real.shape, generator=generator).to(device)
        drop = (torch.rand(n, generator=generator) < condition_dropout).to(device)
        classes = torch.where(drop, torch.full_like(t, self.num_conditions), self.condition_index(codes))
        x_t = schedule.add_noise(real, noise, t)
        target = schedule.get_velocity(real, noise, t)
        return torch.mean((self._velocity(x_t, t, classes, layout, (~drop).float()) - target) ** 2)

    # -- sampling ----------------------------------------------------------------------------------------
    def configure_sampling(self, **options: Any) -> None:
        """Set sampling options (:data:`SAMPLING_OPTIONS`); ValueError naming a bad one (and nothing set)."""
        new = dict(self.sampling)
        for name, value in options.items():
            kind = SAMPLING_OPTIONS.get(name)
            if kind is None:
                raise ValueError(f"unknown sampling option {name!r}; a layout_diffusion model takes {sorted(SAMPLING_OPTIONS)}")
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"sampling option {name} must be {kind.__name__}, got {value!r}")
            if name == "steps" and not 1 <= value <= 1000:
                raise ValueError(f"sampling option steps must be in 1..1000, got {value}")
            if name == "guidance" and not 0.0 <= value <= 20.0:
                raise ValueError(f"sampling option guidance must be in [0, 20], got {value}")
            if name in ("guidance_t_min", "guidance_t_max") and not 0 <= value <= NUM_TRAIN_TIMESTEPS:
                raise ValueError(f"sampling option {name} must be in 0..{NUM_TRAIN_TIMESTEPS}, got {value}")
            new[name] = value
        if new["guidance_t_min"] > new["guidance_t_max"]:
            raise ValueError(f"guidance_t_min ({new['guidance_t_min']}) is above guidance_t_max ({new['guidance_t_max']})")
        self.sampling = new

    @torch.no_grad()
    def forward(self, z: torch.Tensor, codes: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        from diffusers import DPMSolverMultistepScheduler

        n, device = z.shape[0], z.device
        layout = with_unknown_flags(layout) if self.layout_unknown_flags else layout
        opts = self.sampling
        solver = DPMSolverMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE,
                                             prediction_type="v_prediction", algorithm_type="dpmsolver++", solver_order=2)
        solver.set_timesteps(opts["steps"], device=device)
        x = z.view(n, 3, self.resolution, self.resolution) * solver.init_noise_sigma
        classes = self.condition_index(codes)
        # guidance only on the timesteps inside [guidance_t_min, guidance_t_max] (Kynkäänniemi et al. 2024,
        # "Applying guidance in a limited interval"); the same steps for every sample, so shapes stay fixed
        any_guided = opts["guidance"] != 1.0
        if any_guided:  # one pass on [conditional; unconditional]: a fixed shape per micro-batch
            classes2 = torch.cat([classes, torch.full_like(classes, self.num_conditions)])
            layout2 = torch.cat([layout, torch.zeros_like(layout)])
            given2 = torch.cat([torch.ones(n, device=device), torch.zeros(n, device=device)])
        given = torch.ones(n, device=device)
        if opts["channels_last"]:
            self.unet.to(memory_format=torch.channels_last)
        for t in solver.timesteps:
            guided = any_guided and opts["guidance_t_min"] <= int(t) <= opts["guidance_t_max"]
            inp = torch.cat([x, x]) if guided else x
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts["bf16"]):
                if guided:
                    v = self._velocity(inp, t.expand(inp.shape[0]), classes2, layout2, given2).float()
                    v_cond, v_uncond = v[:n], v[n:]
                    v = v_uncond + opts["guidance"] * (v_cond - v_uncond)
                else:
                    v = self._velocity(inp, t.expand(inp.shape[0]), classes, layout, given).float()
            x = solver.step(v, t, x).prev_sample
        return x.clamp(-1, 1)


class NoCritic(nn.Module):
    """The critic slot of a family trained without a second network (diffusion): no parameters."""

    def __init__(self, cardinalities: Sequence[int], **_: Any):
        super().__init__()
