"""Tiny stand-ins for every model the command line loads, written in the download layout, and
synthetic inputs the stand-in DWPose models find a person in."""

import os
import re
import shutil

import av
import numpy as np
import torch
from PIL import Image

from conftest import MOORE_TINY
from tiny_models import write_dwpose

NETWORK_FILES = ("reference_unet.pth", "denoising_unet.pth", "motion_module.pth", "pose_guider.pth")
PERSON_COLOR = (255, 0, 0)  # the stand-in detector boxes bright pixels of channel 2 in BGR order: red


def write_vae(folder):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=4, sample_size=64)
    vae.save_pretrained(folder)


def ldm_vae(sd, levels):
    """diffusers' AutoencoderKL keys -> LDM's (``first_stage_model.*``): test-only, validated below by
    diffusers' converter giving the original back."""
    out = {}
    for key, value in sd.items():
        k = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", key)
        k = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", k)
        k = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{levels - 1 - int(m.group(1))}.block.", k)
        k = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{levels - 1 - int(m.group(1))}.upsample.", k)
        k = re.sub(r"mid_block\.resnets\.(\d)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", k)
        k = k.replace("conv_shortcut.", "nin_shortcut.").replace("conv_norm_out.", "norm_out.")
        if ".mid_block.attentions.0." in k:
            k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
            for new, old in (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                             ("to_out.0.", "proj_out.")):
                k = k.replace("attn_1." + new, "attn_1." + old)
            if k.endswith("weight") and value.ndim == 2:
                value = value[:, :, None, None]
        out["first_stage_model." + k] = value
    return out


def write_image_encoder(folder, projection_dim=32):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=224, patch_size=32, projection_dim=projection_dim)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)


def write_models(root):
    """A models folder in the download layout with tiny models in every place."""
    nets = os.path.join(root, "animate_anyone", "moore")
    os.makedirs(nets)
    for name in NETWORK_FILES:
        shutil.copy(os.path.join(MOORE_TINY, name), nets)
    write_dwpose(os.path.join(root, "dwpose"))
    write_vae(os.path.join(root, "vae", "sd-vae-ft-mse"))
    write_image_encoder(os.path.join(root, "clip_vision", "sd-image-variations-image-encoder"))
    return root


def person_frame(width, height, left, top, box_w, box_h, seed=0):
    """Dark noise with a filled red box: what the stand-in detector calls a person."""
    frame = np.random.default_rng(seed).integers(0, 60, (height, width, 3), dtype=np.uint8)
    frame[top:top + box_h, left:left + box_w] = PERSON_COLOR
    return frame


def write_character(path, width=96, height=160):
    Image.fromarray(person_frame(width, height, 24, 16, 48, 128)).save(path)
    return path


def write_video(path, frames, fps, codec="libx264"):
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def driving_frames(count, width=128, height=96, person=True):
    """A person (red box) walking to the right and growing a little, or just noise."""
    frames = []
    for i in range(count):
        if person:
            frames.append(person_frame(width, height, 40 + 2 * i, 8, 30 + i, 80, seed=i))
        else:
            frames.append(np.random.default_rng(i).integers(0, 60, (height, width, 3), dtype=np.uint8))
    return frames


def read_video(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return np.stack(frames), stream.average_rate, stream.codec_context.name


class FakeHub:
    """A Hugging Face Hub stand-in on 127.0.0.1: ``files`` maps ``repo/path`` to bytes; it answers
    huggingface_hub's HEAD and GET ``/<repo>/resolve/<revision>/<path>`` and records every request."""

    def __init__(self, files):
        import hashlib
        import http.server
        import threading

        self.files, self.requests = dict(files), []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body):
                parts = self.path.split("?")[0].strip("/").split("/")
                key = "/".join(parts[:2] + parts[4:]) if len(parts) > 4 and parts[2] == "resolve" else None
                data = hub.files.get(key)
                hub.requests.append((self.command, key))
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", "0" * 40)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def gets(self):
        return [key for method, key in self.requests if method == "GET" and key]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def closed_port_endpoint():
    """An endpoint on 127.0.0.1 where nothing listens (connections are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
