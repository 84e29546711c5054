"""The nodes with UniAnimate models (COMFYUI_PATH, in this process): the same node set loads the family,
prepares its reference, hands its poses on and samples; the node chain lands where
``poseanimate.animate`` does; mismatched inputs are errors naming node, input and fix."""

import asyncio
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import poseanimate
from conftest import animate_anyone_folder
from test_unianimate import UA_SHARED, UA_SHARED_UNET

CHAIN_TOLERANCE = 1e-4  # ComfyUI's attention kernel against SDPA, float32


@pytest.fixture(scope="module")
def N(comfy):
    if not os.path.isfile(UA_SHARED_UNET):
        pytest.skip(f"the ua-shared parity fixture is not at {UA_SHARED}")
    from poseanimate.nodes import common, extension, models, sampling

    asyncio.run(extension.PoseAnimateExtension().get_node_list())
    with animate_anyone_folder(os.path.dirname(os.path.abspath(UA_SHARED))):
        yield SimpleNamespace(common=common, models=models, sampling=sampling)


def _png(name):
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(os.path.join(UA_SHARED, name)).convert("RGB"))).float() / 255


@pytest.fixture(scope="module")
def inputs():
    t = load_file(os.path.join(UA_SHARED, "tensors.safetensors"))
    return SimpleNamespace(latents=t["ref_latent"], embeds=t["clip_image_embed"][:, 0], text=t["zero_y"],
                           ref_pose=_png("ref_pose.png")[None], ref_image=_png("ref_image.png")[None],
                           poses=torch.stack([_png(f"pose_{i:03d}.png") for i in range(4)]))


@pytest.fixture(scope="module")
def loaded(N):
    (models,) = N.models.LoadModels.execute(folder="ua-shared", dtype="fp32").args
    return models


def _reference(N, models, inputs, **kw):
    args = dict(models=models, latent={"samples": inputs.latents / 0.18215},
                clip_vision_output=SimpleNamespace(image_embeds=inputs.embeds), conditioning=[[inputs.text, {}]],
                reference_pose=inputs.ref_pose)
    args.update(kw)
    return N.models.ReferenceEncode.execute(**args).args[0]


def test_node_chain_matches_the_library(N, loaded, inputs):
    assert loaded.variant == loaded.family == "unianimate" and loaded.embed_dim == 64
    reference = _reference(N, loaded, inputs)
    (pose,) = N.models.PoseGuiderEncode.execute(models=loaded, pose_images=inputs.poses).args
    (out,) = N.sampling.Sampler.execute(models=loaded, reference=reference, pose=pose, seed=7, steps=2, cfg=2.5,
                                        sampler="ddim", beta_schedule="scaled_linear", frames=0).args
    expected = poseanimate.animate(poseanimate.load_models(UA_SHARED, device="cpu", dtype=torch.float32),
                                   reference_latents=inputs.latents, image_embeds=inputs.embeds,
                                   text_embeds=inputs.text, reference_image=inputs.ref_image[0],
                                   reference_pose=inputs.ref_pose[0], pose_images=inputs.poses, seed=7, steps=2,
                                   cfg=2.5)
    torch.testing.assert_close(out["samples"] * 0.18215, expected, atol=CHAIN_TOLERANCE, rtol=0)


def test_mismatches_name_node_input_and_fix(N, loaded, inputs):
    with pytest.raises(ValueError, match=r"ReferenceNet Encode: input 'conditioning': UniAnimate needs the empty "
                                         r"prompt's text tokens\. Fix: load v2-1_512-ema-pruned\.ckpt"):
        _reference(N, loaded, inputs, conditioning=None)
    with pytest.raises(ValueError, match=r"input 'reference_pose': .* Fix: render the character image's pose"):
        _reference(N, loaded, inputs, reference_pose=None)
    with pytest.raises(ValueError, match=r"input 'reference_image': first_frame is on"):
        _reference(N, loaded, inputs, first_frame=True)
    with pytest.raises(ValueError, match=r"input 'clip_vision_output': it has image_embeds of shape \[1, 768\]; "
                                         r"UniAnimate expects \[1, 64\]"):
        _reference(N, loaded, inputs, clip_vision_output=SimpleNamespace(image_embeds=torch.zeros(1, 768)))
    with pytest.raises(ValueError, match=r"input 'reference_pose': it is \[1, 64, 64, 3\]"):
        _reference(N, loaded, inputs, reference_pose=torch.zeros(1, 64, 64, 3))
    reference = _reference(N, loaded, inputs)
    moore_pose = N.common.PoseEncoding(inputs.poses, "moore")
    with pytest.raises(ValueError, match=r"Sampler: input 'pose': it was encoded for moore models"):
        N.sampling.Sampler.execute(models=loaded, reference=reference, pose=moore_pose, seed=0, steps=1, cfg=2.5,
                                   sampler="ddim", beta_schedule="scaled_linear", frames=0)
    moore_reference = N.common.ReferenceEncoding(None, 32, 16)
    (pose,) = N.models.PoseGuiderEncode.execute(models=loaded, pose_images=inputs.poses).args
    with pytest.raises(ValueError, match=r"Sampler: input 'reference': it was not encoded for UniAnimate"):
        N.sampling.Sampler.execute(models=loaded, reference=moore_reference, pose=pose, seed=0, steps=1, cfg=2.5,
                                   sampler="ddim", beta_schedule="scaled_linear", frames=0)


def test_comfyui_empty_prompt_is_the_reference_zero_y(comfy, tmp_path):
    """UniAnimate's zero_y is OpenCLIP's text tower on "" up to its penultimate layer, then ln_final. The tiny
    OpenCLIP model of tests/data/open_clip (its zero_y made by open_clip itself), converted the way ComfyUI
    converts the SD2.1 checkpoint's text encoder and run through ComfyUI's SD2 text path (layer -2, final layer
    norm, SD2 tokenizer), gives the same tokens."""
    from comfy import sd1_clip, utils
    from comfy.text_encoders.sd2_clip import SD2ClipHTokenizer
    from safetensors import safe_open

    from open_clip_weights import TINY, state_dict
    from poseanimate.models.open_clip import empty_prompt_tokens

    with safe_open(os.path.join(os.path.dirname(__file__), "data", "open_clip", "expected.safetensors"), "pt") as f:
        shapes = json.loads(f.metadata()["meta"])["shapes"]
        zero_y = f.get_tensor("zero_y")
    width, heads, layers = TINY["text_width"], TINY["text_heads"], TINY["text_layers"]
    text = {k: v for k, v in state_dict(shapes).items() if not k.startswith("visual.")}
    text["text_projection"] = torch.eye(width)  # ComfyUI's is width x width (as ViT-H's); zero_y does not use it
    sd = utils.clip_text_transformers_convert({"cond_stage_model.model." + k: v for k, v in text.items()},
                                              "cond_stage_model.model.", "clip_h.transformer.")
    config = {"architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
              "eos_token_id": 2, "hidden_act": "gelu", "hidden_size": width, "initializer_factor": 1.0,
              "initializer_range": 0.02, "intermediate_size": 4 * width, "layer_norm_eps": 1e-05,
              "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": heads,
              "num_hidden_layers": layers, "pad_token_id": 1, "projection_dim": width, "torch_dtype": "float32",
              "vocab_size": 49408}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = sd1_clip.SDClipModel(device="cpu", layer="hidden", layer_idx=-2, dtype=torch.float32,
                                 textmodel_json_config=str(tmp_path / "config.json"),
                                 special_tokens={"start": 49406, "end": 49407, "pad": 0}, return_projected_pooled=True)
    prefix = "clip_h.transformer."
    model.transformer.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, strict=True)
    comfy_tokens = SD2ClipHTokenizer().tokenize_with_weights("")
    assert [t[0] for t in comfy_tokens[0]] == empty_prompt_tokens()[0].tolist()
    with torch.no_grad():
        cond = model.encode_token_weights(comfy_tokens)[0]
    torch.testing.assert_close(cond.float(), zero_y, atol=1e-5, rtol=0)


def test_sampler_defaults_auto_schedule_and_pose_temperature(N, loaded, inputs):
    """A new Sampler node's defaults (beta_schedule auto) run UniAnimate with its own schedule, and the pose
    temperature map reaches its temporal transformers."""
    reference = _reference(N, loaded, inputs)
    strokes = torch.zeros_like(inputs.poses)
    strokes[:, 96:160, 48:80] = 1  # on black, so the temperature map is not 1 everywhere
    (pose,) = N.models.PoseGuiderEncode.execute(models=loaded, pose_images=inputs.poses * strokes).args
    args = dict(models=loaded, reference=reference, pose=pose, seed=7, steps=2, cfg=2.5, sampler="ddim", frames=0)
    (auto,) = N.sampling.Sampler.execute(beta_schedule="auto", **args).args
    (scaled,) = N.sampling.Sampler.execute(beta_schedule="scaled_linear", **args).args
    torch.testing.assert_close(auto["samples"], scaled["samples"], atol=0, rtol=0)
    (hot,) = N.sampling.Sampler.execute(beta_schedule="auto", pose_temperature=3.0, **args).args
    assert (hot["samples"] - auto["samples"]).abs().max() * 0.18215 > 1e-4
