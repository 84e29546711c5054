"""The MagicAnimate family through load_models + animate: parity with the reference pipeline's numbers
(../shared/fixtures/parity/ma-shared), and the engine's options on tiny networks."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import poseanimate
from poseanimate.sampling import magicanimate as ma
from poseanimate.sampling.schedulers import SAMPLERS, SchedulerConfig
from conftest import read_rgb, shared_fixture
from tiny_models import write_magicanimate_folder

TOLERANCE = 1e-3  # the fixture README's pass line (same-arithmetic runs differ by ~4e-5)


def _fixture(name):
    path = shared_fixture(name)
    meta = json.load(open(os.path.join(path, "meta.json")))
    tensors = load_file(os.path.join(path, "tensors.safetensors"))
    controls = np.stack([read_rgb(os.path.join(path, f"control_{i:03d}.png")) for i in range(meta["frames"])])
    return path, meta, tensors, torch.from_numpy(controls).float() / 255


def _scheduler(meta):
    effective = meta["scheduler_config_effective"]
    assert effective["set_alpha_to_one"] and effective["thresholding"] is False  # what our DDIM does
    fields = {f.name for f in dataclasses.fields(SchedulerConfig)}
    return {"sampler": "ddim", **{k: v for k, v in effective.items() if k in fields}}


def _context(meta):
    return {"length": meta["context_frames"], "overlap": meta["context_overlap"], "stride": meta["context_stride"],
            "schedule": "moore", "fuse": "flat", "window_batch": meta["context_batch_size"]}


@pytest.mark.parametrize("name", ["ma-shared", "tcan-shared"])
def test_reference_pipeline_parity(name):
    """ma-shared: MagicAnimate's pipeline; tcan-shared: the same with TCAN's map (off, it would be 0.29 away)."""
    assert _parity_gap(name) < TOLERANCE


_GAP = {}


def _parity_gap(name):
    if name in _GAP:
        return _GAP[name]
    path, meta, tensors, controls = _fixture(name)
    models = poseanimate.load_models(path, device="cpu", dtype=torch.float32)
    assert models.family == "magicanimate"
    out = poseanimate.animate(models, reference_latents=tensors["ref_latents"], text_embeds=tensors["text_embeddings"],
                              pose_images=controls, noise=tensors["noise"], steps=meta["steps"],
                              cfg=meta["guidance_scale"], scheduler=_scheduler(meta), context=_context(meta),
                              pose_temperature=3.0 if meta.get("tcan_ptm") else 0.0)
    expected = tensors["expected_latents"][0].transpose(0, 1)
    assert out.shape == expected.shape
    _GAP[name] = (out - expected).abs().max().item()
    return _GAP[name]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = write_magicanimate_folder(str(tmp_path_factory.mktemp("ma") / "magicanimate"), width=32,
                                       cross_attention_dim=32, seed=3)
    models = poseanimate.load_models(folder, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    inputs = dict(reference_latents=torch.randn(1, 4, 8, 8, generator=g), text_embeds=torch.randn(1, 77, 32, generator=g),
                  pose_images=torch.rand(7, 64, 64, 3, generator=g))
    return models, inputs


def _run(tiny, **kw):
    models, inputs = tiny
    kw = {"steps": 2, "cfg": 2.5, "seed": 5, "context": {"length": 4, "overlap": 2}, **kw}
    return poseanimate.animate(models, **inputs, **kw)


def test_family_defaults(tiny):
    family = poseanimate.sampling.families.get_family("magicanimate")
    assert family.context["length"] == 16 and family.scheduler["prediction_type"] == "epsilon"
    out = _run(tiny, context=None)
    assert out.shape == (7, 4, 8, 8) and torch.isfinite(out).all()


def test_window_batch_and_control_cache_do_not_change_the_result(tiny, monkeypatch):
    # 16x16 latents: at 8x8 the tiny UNet's deepest level is 1x1, where its GroupNorms (over 4 frames) turn the
    # 1e-6 rounding difference of a batched matrix product on one thread into 6e-4.
    models, _ = tiny
    g = torch.Generator().manual_seed(0)
    tiny = models, dict(reference_latents=torch.randn(1, 4, 16, 16, generator=g),
                        text_embeds=torch.randn(1, 77, 32, generator=g),
                        pose_images=torch.rand(7, 128, 128, 3, generator=g))
    one = _run(tiny)
    batched = _run(tiny, context={"length": 4, "overlap": 2, "window_batch": 3})
    torch.testing.assert_close(batched, one, atol=1e-4, rtol=0)
    calls = []
    forward = ma.MagicAnimateModel._control

    def no_cache(self, latents, t, frames):
        self.control = {}
        calls.append(len(frames))
        return forward(self, latents, t, frames)

    monkeypatch.setattr(ma.MagicAnimateModel, "_control", no_cache)
    torch.testing.assert_close(_run(tiny), one, atol=1e-4, rtol=0)
    assert calls


def test_unguided(tiny):
    """cfg <= 1: the conditional branch only (the reference pipeline cannot run this)."""
    out = _run(tiny, cfg=1.0)
    assert torch.isfinite(out).all()
    assert (out - _run(tiny, cfg=1.0, context={"length": 4, "overlap": 2, "schedule": "moore"})).abs().max() < 1e-5
    assert (out - _run(tiny)).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler(tiny, sampler):
    out = _run(tiny, scheduler={"sampler": sampler})
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("context", [{"schedule": "static", "fuse": "pyramid"}, {"schedule": "uniform", "stride": 2},
                                     {"fuse": "overlap-linear", "freenoise": True}])
def test_context_options(tiny, context):
    out = _run(tiny, context={"length": 4, "overlap": 2, **context})
    assert torch.isfinite(out).all()


def test_bad_inputs(tiny):
    models, inputs = tiny
    with pytest.raises(ValueError, match=r"text_embeds must be \[1, 77, 32\]"):
        poseanimate.animate(models, **{**inputs, "text_embeds": torch.zeros(1, 77, 768)}, steps=1, cfg=2)
    with pytest.raises(ValueError, match="DensePose images"):
        poseanimate.animate(models, **{**inputs, "pose_images": torch.zeros(3, 32, 64, 3)}, steps=1, cfg=2)
    with pytest.raises(ValueError, match="pose_temperature"):
        poseanimate.animate(models, **inputs, steps=1, cfg=2, pose_temperature=-1)
