"""Benchmark: the train step of jflow's default flow UNet (JAX/Flax NNX) against diffusers'
UNetMotionModel (AnimateDiff's architecture, PyTorch on the CPU) configured to the same sizes,
and the latency of sampling one flow with 10 and with 25 steps.

Both train steps do the same work, interleaved in one process so that both see the same machine
load: draw noise and a time, build the rectified-flow input ``z_t = (1 - t) x0 + t eps``, run
the UNet on ``z_t`` with given cross-attention tokens, MSE to the velocity ``eps - x0``, backward,
global-norm clipping at 1, AdamW (lr 3e-4, weight decay 0.01, eps 1e-8). The UNet input is the
default config's flow after patching, ``[B, C, T, h, w] = [8, 32, 8, 8, 8]`` (16 frames of a
16x16 grid of 4 channels in 2x2 patches and frame pairs; ``--frame-patch 1`` gives the
earlier default's ``[8, 16, 16, 8, 8]``), and the cross-attention context is ``[B, 33, 64]`` (16 text
tokens, 16 RGB-D tokens and the null token of jflow's conditioning). The JAX side is
``FlowUNet.denoise`` with the conditioning encoded once outside the step (diffusers' UNet takes
ready-made ``encoder_hidden_states``). jflow's whole training step (conditioning encoders, text
dropout, EMA) is timed in docs/model.md.

diffusers is configured to the default FlowModelConfig: widths (32, 64), one ResNet block per
level down and two up, cross-attention on level 1 and in the mid block, motion modules at every
level and in the mid block, 4 attention heads (spatial and temporal), 8 norm groups, one
transformer block each, cross-attention width 64. Two changes after construction bring its
transformer blocks to jflow's: the GEGLU feed-forward widths use ``ff_mult`` (1; diffusers
builds 4) and the temporal blocks keep one self-attention (AnimateDiff's motion blocks have two,
``double_self_attention``). Remaining differences: diffusers normalises the motion-module input
with a GroupNorm (jflow: a per-token LayerNorm) and uses convolutional 1x1 projections around
its spatial transformers.

XLA flags: none are set here (XLA's CPU fusion emitters stay on, as for training; see
jflow.runtime). Run it alone on the machine:

    python benchmarks/unet_step.py [--repeats 10] [--frame-patch 1]

torch and diffusers come from the ``bench`` extra; jflow itself never imports torch.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

from jflow.models import Conditioning, FlowModelConfig, FlowUNet, count_params, sample

LR, WEIGHT_DECAY, ADAM_EPS, CLIP = 3e-4, 0.01, 1e-8, 1.0
CONTEXT_TOKENS = 33


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(fn, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of ``repeats`` calls of ``fn`` (which blocks)."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return walls, cpus


# ---------------------------------------------------------------------- JAX


def conditioning(cfg: FlowModelConfig, batch: int, image: int, rng: np.random.Generator):
    tokens = rng.standard_normal((batch, 16, cfg.text_dim)).astype(np.float32)
    return Conditioning(
        text_tokens=jnp.asarray(tokens),
        text_mask=jnp.ones((batch, 16), bool),
        rgb=jnp.asarray(rng.integers(0, 256, (batch, image, image, 3), dtype=np.uint8)),
        depth=jnp.asarray(rng.uniform(0.5, 3.0, (batch, image, image)).astype(np.float32)),
        initial_points=jnp.asarray(
            rng.standard_normal((batch, *cfg.grid_hw, 4)).astype(np.float32)
        ),
    )


def jax_unet_step(cfg: FlowModelConfig, batch: int, image: int):
    """A jitted UNet-only train step and its state; returns ``(run_one_step, num_params)``."""
    rng = np.random.default_rng(0)
    model = FlowUNet(cfg, rngs=nnx.Rngs(0))
    enc = model.encode(conditioning(cfg, batch, image, rng))
    assert enc.context.shape[1] == CONTEXT_TOKENS, enc.context.shape
    unet_only = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("cond_encoder")))
    graphdef, params, rest = nnx.split(model, unet_only, ...)
    optimizer = optax.chain(
        optax.clip_by_global_norm(CLIP),
        optax.adamw(LR, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY),
    )
    n_train = cfg.objective.num_train_steps

    def step(params, opt_state, x0, enc, key):
        k_eps, k_t = jax.random.split(key)
        eps = jax.random.normal(k_eps, x0.shape)
        t = jax.random.uniform(k_t, (x0.shape[0],))
        tb = t[:, None, None, None, None]
        z = (1 - tb) * x0 + tb * eps

        def loss(p):
            out = nnx.merge(graphdef, p, rest).denoise(z, t * n_train, enc)
            return jnp.mean((out - (eps - x0)) ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    jit_step = jax.jit(step, donate_argnums=(0, 1))
    x0 = jnp.asarray(
        rng.standard_normal((batch, cfg.num_frames, *cfg.grid_hw, 4)).astype(np.float32)
    )
    state = {"params": params, "opt": optimizer.init(params), "i": 0}

    def run():
        key = jax.random.fold_in(jax.random.key(1), state["i"])
        state["params"], state["opt"], loss = jit_step(state["params"], state["opt"], x0, enc, key)
        state["i"] += 1
        jax.block_until_ready(loss)

    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    return run, n


# ---------------------------------------------------------------------- PyTorch / diffusers


def diffusers_unet(cfg: FlowModelConfig):
    """UNetMotionModel at the default FlowModelConfig's sizes (see the module docstring)."""
    from diffusers import UNetMotionModel
    from diffusers.models.attention import BasicTransformerBlock, FeedForward

    if len(cfg.channels) != 2 or cfg.attention_levels != (False, True):
        raise SystemExit("the diffusers mirror is written for the default two-level config")
    in_ch = cfg.flow_channels * cfg.patch_size**2 * cfg.frame_patch
    unet = UNetMotionModel(
        in_channels=in_ch,
        out_channels=in_ch,
        down_block_types=("DownBlockMotion", "CrossAttnDownBlockMotion"),
        up_block_types=("CrossAttnUpBlockMotion", "UpBlockMotion"),
        block_out_channels=cfg.channels,
        layers_per_block=cfg.num_res_blocks,
        norm_num_groups=cfg.groups,
        cross_attention_dim=cfg.cond_dim,
        num_attention_heads=cfg.num_heads,
        motion_num_attention_heads=cfg.num_heads,
        motion_max_seq_length=cfg.motion_max_frames,
        transformer_layers_per_block=cfg.transformer_depth,
        temporal_transformer_layers_per_block=cfg.motion_depth,
        use_motion_mid_block=True,
    )
    for name, block in unet.named_modules():
        if not isinstance(block, BasicTransformerBlock):
            continue
        dim = block.ff.net[0].proj.in_features
        block.ff = FeedForward(dim, mult=cfg.ff_mult, activation_fn="geglu")
        if "motion_modules" in name:  # One temporal self-attention, as jflow's motion blocks.
            block.attn2 = None
            block.norm2 = None
    return unet


def torch_step(cfg: FlowModelConfig, batch: int):
    torch.manual_seed(0)
    unet = diffusers_unet(cfg).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, eps=ADAM_EPS)
    p, k, (gh, gw) = cfg.patch_size, cfg.frame_patch, cfg.grid_hw
    frames = cfg.num_frames // k
    x0 = torch.randn(batch, cfg.flow_channels * p * p * k, frames, gh // p, gw // p)
    context = torch.randn(batch, CONTEXT_TOKENS, cfg.cond_dim)
    n_train = cfg.objective.num_train_steps

    def run():
        eps = torch.randn_like(x0)
        t = torch.rand(batch)
        tb = t[:, None, None, None, None]
        z = (1 - tb) * x0 + tb * eps
        # diffusers' UNetMotionModel wants the context per frame (AnimateDiffPipeline repeats
        # it; jflow's denoise repeats it inside).
        frames_context = context.repeat_interleave(frames, dim=0)
        out = unet(z, t * n_train, encoder_hidden_states=frames_context).sample
        loss = torch.mean((out - (eps - x0)) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), CLIP)
        optimizer.step()

    return run, sum(q.numel() for q in unet.parameters())


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10, help="measured steps per model")
    parser.add_argument("--sample-repeats", type=int, default=5)
    parser.add_argument("--image", type=int, default=128, help="first-frame size (gen-kitchen)")
    parser.add_argument(
        "--frame-patch", type=int, default=0, help="frames per UNet step (0: the default's)"
    )
    args = parser.parse_args()
    cfg = FlowModelConfig.default(**({"frame_patch": args.frame_patch} if args.frame_patch else {}))
    b = args.batch_size
    print(
        f"{datetime.date.today()}  {cpu_name()}, {os.cpu_count()} CPUs; jax {jax.__version__} "
        f"({jax.devices()[0].platform}, {jax.device_count()} device), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )

    t0 = time.perf_counter()
    jax_run, jax_params = jax_unet_step(cfg, b, args.image)
    jax_run()
    jax_compile = time.perf_counter() - t0
    torch_run, torch_params = torch_step(cfg, b)
    for _ in range(2):  # warm-up
        jax_run()
        torch_run()
    jw, jc, tw, tc = [], [], [], []
    for _ in range(args.repeats):  # interleaved: both see the same load
        w, c = timed(jax_run, 1)
        jw += w
        jc += c
        w, c = timed(torch_run, 1)
        tw += w
        tc += c
    med = statistics.median
    p, k = cfg.patch_size, cfg.frame_patch
    shape = [cfg.flow_channels * p * p * k, cfg.num_frames // k, *(n // p for n in cfg.grid_hw)]
    print(f"\ntrain step, batch {b} of UNet input [C, T, h, w] = {shape}")
    print(f"  parameters: jflow FlowUNet (UNet only) {jax_params:,}; diffusers {torch_params:,}")
    print(f"  jflow compile (first step): {jax_compile:.1f} s")
    print(f"  median of {args.repeats} steps   wall s   CPU s (all threads)")
    print(f"  jflow JAX             {med(jw):7.3f}  {med(jc):7.3f}")
    print(f"  diffusers PyTorch     {med(tw):7.3f}  {med(tc):7.3f}")
    print(f"  ratio diffusers / jflow: wall {med(tw) / med(jw):.2f}x, CPU {med(tc) / med(jc):.2f}x")

    print("\nsampling one flow (batch 1, 1 sample, Euler, no guidance)")
    model = FlowUNet(cfg, rngs=nnx.Rngs(0))
    cond = conditioning(cfg, 1, args.image, np.random.default_rng(1))
    print(f"  model parameters (with encoders): {count_params(model):,}")
    for steps in (10, 25):

        def one(steps=steps):
            jax.block_until_ready(sample(model, cond, rng=jax.random.key(0), steps=steps))

        t0 = time.perf_counter()
        one()
        compile_s = time.perf_counter() - t0
        w, c = timed(one, args.sample_repeats)
        print(
            f"  {steps:2d} steps: median wall {1000 * med(w):7.1f} ms, CPU {1000 * med(c):7.1f} ms "
            f"(first call with compile {compile_s:.1f} s)"
        )


if __name__ == "__main__":
    main()
