"""The torch half of the job: devices, the standalone VAE and CLIP image encoder, the reference
conditioning exactly as Moore-AnimateAnyone (and UniAnimate) build it, the engine with a progress bar,
chunked decoding."""

import os
import pickle

import numpy as np
import torch
from PIL import Image

from ..models.loading import READ_ERRORS, first_line, get_device, get_dtype, unreadable_reason
from ..sampling.engine import VAE_SCALE
from .pipeline import JobError

# the openai CLIP normalisation that CLIPImageProcessor applies (transformers' OPENAI_CLIP_MEAN/STD)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224


def torch_settings(device, dtype):
    try:
        device = get_device(device, option="--device")
    except ValueError as e:
        raise JobError(str(e)) from e
    return device, get_dtype(dtype, device)


def _load_problem(folder, error, expected):
    """A weights-file problem in words; other errors (a bad config.json, a missing file) as their first
    line and what the folder should be."""
    from safetensors import SafetensorError

    cause = error
    while cause is not None and not isinstance(cause, (pickle.UnpicklingError, SafetensorError, EOFError)):
        cause = cause.__cause__ or cause.__context__
    if cause is not None or "PytorchStreamReader" in str(error):
        return unreadable_reason(cause or error, f"a weights file in {folder}")
    return f"{first_line(' '.join(str(error).split()))}; it must be {expected}"


def load_vae(folder, device, dtype):
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(folder, torch_dtype=dtype, local_files_only=True, low_cpu_mem_usage=False)
    except READ_ERRORS as e:
        raise JobError(f"the VAE in {folder} could not be loaded: "
                       f"{_load_problem(folder, e, 'the diffusers folder of stabilityai/sd-vae-ft-mse')}") from e
    return vae.to(device).eval().requires_grad_(False)


def load_image_encoder(folder, device, dtype):
    from transformers import CLIPVisionModelWithProjection

    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    except READ_ERRORS as e:
        expected = "the image_encoder folder of lambdalabs/sd-image-variations-diffusers"
        raise JobError(f"the CLIP image encoder in {folder} could not be loaded: "
                       f"{_load_problem(folder, e, expected)}") from e
    return encoder.to(device).eval().requires_grad_(False)


def empty_prompt_embeds(folder, device, dtype):
    """MagicAnimate's text conditioning: SD1.5's text encoder (transformers CLIPTextModel, ``folder`` with its
    ``tokenizer/``) on the empty prompt, padded to 77 tokens as the reference's ``_encode_prompt`` does;
    ``[1, 77, 768]`` float32 on the CPU."""
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"), local_files_only=True)
        encoder = CLIPTextModel.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise JobError(f"the SD1.5 text encoder in {folder} could not be loaded ({' '.join(str(e).split())[:300]}); "
                       "it must be the text_encoder (and tokenizer/) folders of "
                       "stable-diffusion-v1-5/stable-diffusion-v1-5") from e
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.inference_mode():
        embeds = encoder.to(device).eval()(ids.to(device))[0]
    return embeds.float().cpu()


def clip_pixels(image, resample=Image.BICUBIC):
    """The CLIP encoder's input as Moore builds it: the image squashed to 224x224 (PIL's default
    filter, bicubic; UniAnimate's ``vit_transforms`` use bilinear), scaled to [0, 1] and normalised;
    [1, 3, 224, 224] float32."""
    x = np.asarray(image.resize((CLIP_SIZE, CLIP_SIZE), resample), dtype=np.float32) * np.float32(1 / 255)
    x = (x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return torch.from_numpy(x).permute(2, 0, 1)[None].contiguous()


def vae_pixels(image, width, height):
    """The VAE's input as Moore builds it: Lanczos-resized to the video size, in [-1, 1]; [1, 3, H, W]."""
    x = np.asarray(image.resize((width, height), Image.LANCZOS), dtype=np.float32) / 255.0
    return torch.from_numpy(2.0 * x - 1.0).permute(2, 0, 1)[None].contiguous()


def reference_latents(image, width, height, vae):
    """The character's VAE latents (mean) x 0.18215, ``[1, 4, H/8, W/8]`` float32 on the CPU."""
    with torch.inference_mode():
        pixels = vae_pixels(image, width, height).to(vae.device, vae.dtype)
        return (vae.encode(pixels).latent_dist.mean * VAE_SCALE).float().cpu()


def reference_conditioning(image, width, height, vae, encoder):
    """``(reference_latents [1,4,H/8,W/8] x 0.18215, image_embeds [1,C])`` for the engine."""
    with torch.inference_mode():
        embeds = encoder(pixel_values=clip_pixels(image).to(encoder.device, encoder.dtype)).image_embeds
    return reference_latents(image, width, height, vae), embeds.float().cpu()


def load_checkpoint_vae(path, device, dtype):
    """The VAE of a single-file Stable Diffusion checkpoint (UniAnimate's v2-1_512-ema-pruned.ckpt, or a
    .safetensors copy) as diffusers' AutoencoderKL; the rest of the file is never read into memory."""
    from diffusers import AutoencoderKL

    from ..models.loading import CheckpointError, read_state_dict
    from ..models.sd_checkpoint import is_ldm_vae, vae_to_diffusers

    try:
        sd = read_state_dict(path)
    except CheckpointError as e:
        raise JobError(f"the VAE checkpoint {e}") from e
    if not is_ldm_vae(sd):
        raise JobError(f"{path} holds no VAE (no first_stage_model.* weights); it must be a Stable Diffusion "
                       "checkpoint such as v2-1_512-ema-pruned.ckpt")
    config, weights = vae_to_diffusers(sd)
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    try:
        vae.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True, assign=True)
    except RuntimeError as e:
        raise JobError(f"the VAE in {path} does not fit an SD VAE ({first_line(' '.join(str(e).split()))}); "
                       "the file is damaged or from another model") from e
    return vae.to(device).eval().requires_grad_(False)


def load_open_clip(path, device, dtype):
    """OpenCLIP ViT-H-14's image and text towers from ``open_clip_pytorch_model.bin``."""
    from ..models.loading import CheckpointError
    from ..models.open_clip import load_open_clip as load

    try:
        return load(path, device=device, dtype=dtype)
    except CheckpointError as e:
        raise JobError(f"OpenCLIP: {e}") from e


def bilinear_pixels(image, width, height):
    """UniAnimate's ``Resize`` + ``ToTensor``: PIL's bilinear filter to the video size, uint8 [H, W, 3]."""
    return np.array(image.resize((width, height), Image.BILINEAR))


def unianimate_conditioning(image, width, height, vae, clip):
    """UniAnimate's reference inputs as its inference builds them: the VAE sees the image resized
    (bilinear) to the video size in [-1, 1], the image tower the image squashed to 224x224
    (bilinear, CLIP normalisation), the text tower the empty prompt. Returns ``animate``'s
    ``reference_latents`` (the posterior's mean x 0.18215; the reference draws a sample),
    ``image_embeds`` [1, C], ``text_embeds`` [1, 77, C] and ``reference_image`` uint8 [H, W, 3]."""
    pixels = bilinear_pixels(image, width, height)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        latents = vae.encode(x.sub(0.5).div(0.5).to(vae.device, vae.dtype)).latent_dist.mean
    return {"reference_latents": (latents * VAE_SCALE).float().cpu(),
            "image_embeds": clip.encode_image(clip_pixels(image, Image.BILINEAR)).cpu(),
            "text_embeds": clip.empty_prompt().cpu(), "reference_image": torch.from_numpy(pixels)}


def decode(vae, latents, writer, chunk=8, progress=None):
    """VAE-decode ``latents`` [F,4,h,w] (x 0.18215) ``chunk`` frames at a time into ``writer``."""
    with torch.inference_mode():
        for i in range(0, latents.shape[0], chunk):
            x = (latents[i:i + chunk] / VAE_SCALE).to(vae.device, vae.dtype)
            images = (vae.decode(x).sample.float() / 2 + 0.5).clamp(0, 1)
            writer.write((images * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())
            if progress is not None:
                progress.update(images.shape[0])


class ProgressCallback:
    """Feeds the engine's window/step events into a progress bar counting windows."""

    def __init__(self, bar):
        self.bar, self.done = bar, {}

    def __call__(self, event):
        if event["event"] == "window":
            step = event["step"]
            self.bar.set_postfix_str(f"step {step + 1}/{event['steps']}", refresh=False)
            self.bar.update(event["window"] - self.done.get(step, 0))
            self.done[step] = event["window"]

