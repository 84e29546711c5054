"""The whole job without ComfyUI: character image + driving video (or poses) -> animated video.

DWPose on the character and on every driving frame, retargeting to the character, optional
smoothing, pose rendering in the networks' style, the engine, chunked VAE decoding and a video
at the driving frame rate. The reference conditioning is Moore-AnimateAnyone's: the CLIP image
encoder sees the character squashed to 224x224 (CLIP normalisation, ``image_embeds``), the
VAE sees it resized to the video size (Lanczos) and its ``latent_dist.mean`` x 0.18215 is the
reference latent. UniAnimate's is its own (``generate.unianimate_conditioning``): OpenCLIP's image
and text towers, the SD2.1 checkpoint's VAE, bilinear resizing, and the character's own pose drawn
in its style as the reference pose.
"""

import contextlib
import json
import logging
import math
import os
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ..pose import densepose as dp
from ..pose.dwpose import DETECTOR_FILE, POSE_FILE, DWPose, locate_model
from ..pose.keypoints import from_pose_keypoint
from ..pose.render import render_frames
from ..pose.retarget import retarget as retarget_frames
from ..pose.smooth import get_smoother, smooth_frames
from . import download as dl
from .files import same_file, temporary_file
from .video import VideoError, VideoReader, VideoWriter

log = logging.getLogger("poseanimate.cli")

SHORT_SIDE = 512
POSE_FPS = 24
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv")
RETARGET = ("neck", "driving", "unianimate", "off")
DTYPES = ("auto", "fp16", "bf16", "fp32")
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
DEFAULT_CHARACTER = os.path.join(ASSETS, "character.png")  # drawn by tools/make_assets.py
DEFAULT_CHARACTER_POSE = os.path.join(ASSETS, "character.json")  # its skeleton: no DWPose needed
DEFAULT_DRIVING = os.path.join(ASSETS, "dance.json")
DENSEPOSE_FAMILIES = ("magicanimate",)  # driven by DensePose images instead of skeleton renders
REFERENCE_POSE = "ref_pose"  # UniAnimate's pose folders hold the character's pose under this name


class JobError(ValueError):
    """A problem with the job's inputs; the message says which input and what to do."""


# ---------------------------------------------------------------------------------------------- inputs


def _round8(x):
    return max(8, int(round(x / 8)) * 8)


def video_size(width, height, image_w, image_h, short_side=SHORT_SIDE):
    """The output size: as given, or from the character's aspect with the short side ``short_side``,
    both multiples of 8."""
    if width is None and height is None:
        scale = short_side / min(image_w, image_h)
        width, height = _round8(image_w * scale), _round8(image_h * scale)
    elif width is None:
        width = _round8(height * image_w / image_h)
    elif height is None:
        height = _round8(width * image_h / image_w)
    for name, value in (("width", width), ("height", height)):
        if value <= 0 or value % 8:
            lower = max(8, value // 8 * 8)
            raise JobError(f"--{name} {value} is not a positive multiple of 8; use {lower} or {lower + 8}")
    return width, height


IMAGE_ERRORS = (Image.DecompressionBombError, OSError, UnidentifiedImageError, ValueError)


def _image_error(path, what, error):
    if isinstance(error, Image.DecompressionBombError):
        size = re.search(r"\((\d+) pixels\)", str(error))
        pixels = f"{int(size.group(1)) / 1e6:.0f} million pixels" if size else "too many pixels"
        return JobError(f"{what} {path} is too large to open safely ({pixels}; the limit is "
                        f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} million); use a smaller image")
    return JobError(f"{what} {path} could not be read as an image ({' '.join(str(error).split())})")


def check_image(path, what):
    """Read only the header of the image at ``path`` (size, format): a cheap check before slow work."""
    try:
        with Image.open(path):
            pass
    except IMAGE_ERRORS as e:
        raise _image_error(path, what, e) from e


def load_image(path, what="--character"):
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image).convert("RGB")
        if caught:
            log.warning("%s %s is %dx%d pixels; it is scaled down to the video size", what, path, *image.size)
        return image
    except IMAGE_ERRORS as e:
        raise _image_error(path, what, e) from e


def _natural_key(name):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def reference_pose_file(folder):
    """The character's pose in a pose-image folder laid out as UniAnimate's ``run_align_pose.py`` writes
    it (``ref_pose.jpg`` beside the driving poses), or None."""
    names = [n for n in os.listdir(folder) if os.path.splitext(n)[0] == REFERENCE_POSE
             and n.lower().endswith(IMAGE_EXTENSIONS)]
    return os.path.join(folder, sorted(names)[0]) if names else None


def pose_image_names(folder):
    names = sorted((n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)
                    and os.path.splitext(n)[0] != REFERENCE_POSE), key=_natural_key)
    if not names:
        raise JobError(f"--driving {folder} is a folder without pose images ({', '.join(IMAGE_EXTENSIONS)})")
    return names


def pose_images_from_folder(folder, width, height, max_frames=None, resample=Image.LANCZOS):
    """A folder of pose images in name order (a ``ref_pose`` image left out), resized to the video size
    (Lanczos, as Moore's pipeline; UniAnimate's uses bilinear)."""
    names = pose_image_names(folder)[:max_frames]
    images = np.empty((len(names), height, width, 3), dtype=np.uint8)
    for i, name in enumerate(names):
        image = load_image(os.path.join(folder, name), "pose image")
        if image.size != (width, height):
            image = image.resize((width, height), resample)
        images[i] = np.asarray(image)
    return images


def pose_frames_from_json(path, max_frames=None):
    try:
        with open(path, encoding="utf-8") as f:
            frames = from_pose_keypoint(json.load(f))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as e:
        raise JobError(f"--driving {path} is not a usable POSE_KEYPOINT JSON file ({' '.join(str(e).split())})") from e
    if not frames:
        raise JobError(f"--driving {path} holds no pose frames")
    frames = frames[:max_frames]
    empty = sum(all(p.is_empty() for p in f.people) for f in frames)
    if empty == len(frames):
        raise JobError(f"--driving {path}: none of its {len(frames)} frames has a person with keypoints; "
                       "use poses of one person's body (e.g. from a DWPose or OpenPose node)")
    if empty:
        log.warning("%d of %d frames of %s have no person; those frames are drawn empty", empty, len(frames), path)
    return frames


def driving_kind(path):
    if os.path.isdir(path):
        return "images"
    if not os.path.exists(path):
        raise JobError(f"--driving {path}: no such file or folder")
    return "json" if path.lower().endswith(".json") else "video"


def prepare_output(output, inputs=(), overwrite=False):
    """Check that ``output`` can be written without harming a file of the user's, and create a
    temporary file of our own next to it; the video goes there and replaces ``output`` only when
    complete. ``inputs``: ``(option, path)`` pairs the output must not be."""
    output = os.path.abspath(output)
    stem, ext = os.path.splitext(output)
    if ext.lower() not in VIDEO_EXTENSIONS:
        raise JobError(f"-o {output}: the file name must end in {', '.join(VIDEO_EXTENSIONS)} (.mp4 recommended)")
    folder = os.path.dirname(output)
    if not os.path.isdir(folder):
        raise JobError(f"-o {output}: the folder {folder} does not exist")
    if os.path.isdir(output):
        raise JobError(f"-o {output} is a folder; give a file name such as {os.path.join(output, 'out.mp4')}")
    for option, path in inputs:
        if path and os.path.exists(path) and same_file(output, path):
            raise JobError(f"-o {output} is the {option} input; writing there would destroy it: choose another "
                           "output path")
    if os.path.lexists(output) and not overwrite:
        raise JobError(f"-o {output} already exists; add --overwrite (-y) to replace it, or choose another output path")
    try:
        partial = temporary_file(folder, f".{os.path.basename(stem)}.", f".partial{ext}")
    except OSError as e:
        raise JobError(f"-o {output} cannot be written ({e.strerror or e}); choose another output path") from e
    return output, partial


def check_options(*, frames, fps, steps, cfg, seed, context, decode_chunk):
    """The numeric options, checked before any slow work; messages name the command line's options.
    ``steps``/``cfg`` None: the family's defaults (sampling/families.py)."""
    for option, value in (("--frames", frames), ("--steps", steps), ("--decode-chunk", decode_chunk)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise JobError(f"{option} must be a whole number of at least 1, got {value!r}")
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise JobError(f"--fps {fps} is not a frame rate; give a positive number such as 24, or leave it out to use "
                       "the driving video's")
    if cfg is not None and not (isinstance(cfg, (int, float)) and math.isfinite(cfg)):
        raise JobError(f"--cfg {cfg} is not a guidance scale; give a finite number such as 3.5 "
                       "(1 or less: no guidance)")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise JobError(f"--seed {seed} is out of range; give a whole number from 0 to {2**64 - 1}")
    from ..sampling.context import ContextOptions

    context = dict(context or {})
    defaults = ContextOptions()
    length, overlap = context.get("length", defaults.length), context.get("overlap", defaults.overlap)

    def shown(name, value):
        return f"--context-{name} {value}{'' if name in context else ' (the default)'}"

    if isinstance(overlap, int) and overlap < 0:
        raise JobError(f"{shown('overlap', overlap)} must be 0 or more")
    if isinstance(length, int) and isinstance(overlap, int) and overlap >= length:
        raise JobError(f"{shown('overlap', overlap)} must be less than {shown('length', length)}; "
                       f"give --context-overlap {length // 4} (or a longer --context-length)")
    try:
        return ContextOptions.from_dict(context)
    except (TypeError, ValueError) as e:
        raise JobError(f"context window options: {e}") from e


# ---------------------------------------------------------------------------------------------- models


def _has_weights(folder):
    """Weight files in ``folder`` or (MagicAnimate's release layout) in its subfolders."""
    if not os.path.isdir(folder):
        return False
    names = os.listdir(folder)
    subfolders = [os.path.join(folder, n) for n in names if os.path.isdir(os.path.join(folder, n))]
    return any(n.lower().endswith(dl.WEIGHT_EXTENSIONS) for n in names) or any(
        n.lower().endswith(dl.WEIGHT_EXTENSIONS) for sub in subfolders for n in os.listdir(sub))


def pick_variant(root, variant):
    """The variant asked for; otherwise the first one whose folder holds weights (moore first)."""
    if variant:
        return dl.check_variant(variant)
    return next((v for v in dl.VARIANTS if _has_weights(os.path.join(root, dl.networks_dir(v)))), dl.VARIANTS[0])


def missing_files(root, variant, components, networks=None):
    """The Remote files the job needs that are not in ``root``; a networks folder counts as present
    when it holds weight files (the released .pth or converted .safetensors)."""
    needed = dl.remotes(variant, components)
    out = []
    for component, files in needed.items():
        if component == "networks":
            if not _has_weights(networks or os.path.join(root, dl.networks_dir(variant))):
                out += files
        else:
            out += dl.missing(root, files)
    return out


def ensure_models(root, variant, components, networks=None, download=False):
    todo = missing_files(root, variant, components, networks)
    if networks and not _has_weights(networks):
        raise JobError(f"--networks {networks} holds no model files; give the folder with the four "
                       "Animate Anyone files (reference_unet, denoising_unet, motion_module, pose_guider)")
    if not todo:
        return
    if download:
        dl.download(root, todo, log=log.info)
        return
    folders = sorted({os.path.dirname(f.dest) for f in todo})
    raise JobError(f"models missing in {root}: {', '.join(folders)}. Run `poseanimate download --variant {variant}"
                   f"{'' if root == dl.default_models_dir() else f' --models {root}'}` first, or add --download")


def check_parallel(workers, ray):
    import importlib.util

    if ray is not None and not workers:
        raise JobError(f"--ray {ray} is for window-parallel sampling: give --workers N too")
    if workers and importlib.util.find_spec("ray") is None:
        raise JobError(f"--workers {workers} needs Ray: pip install 'poseanimate[ray]' (or leave --workers out)")


def _cached(cache, kind, key, load):
    """``load()``, or the model of this ``kind`` kept in ``cache`` when it was loaded with the same ``key``
    (one model per kind is kept)."""
    if cache is None:
        return load()
    if kind not in cache or cache[kind][0] != key:
        cache.pop(kind, None)
        cache[kind] = (key, load())
    return cache[kind][1]


# ---------------------------------------------------------------------------------------------- poses


def _bar(progress, **kw):
    return tqdm(disable=not progress, dynamic_ncols=True, **kw)


def video_poses(path, dwpose, max_frames, progress):
    """DWPose on every frame of a video, decoded one frame at a time (a long video never sits in memory);
    returns the PoseFrames and the frame rate."""
    poses = []
    try:
        with VideoReader(path, max_frames) as video, \
                _bar(progress, total=len(video) or None, desc="poses", unit="frame") as bar:
            fps = video.fps
            for frame in video:
                poses.append(dwpose.detect(frame))
                bar.update(1)
    except VideoError as e:
        raise JobError(f"--driving {e}") from e
    empty = sum(not p.people for p in poses)
    if empty == len(poses):
        raise JobError(f"--driving {path}: DWPose found no person in any of its {len(poses)} frames; "
                       "use a video where one person's body is visible")
    if empty:
        log.warning("DWPose found nobody in %d of %d frames of %s; those frames are drawn empty", empty, len(poses), path)
    return poses, fps


def densepose_video(path, densepose, width, height, max_frames, progress, fit="pad"):
    """DensePose control images of every frame of a video (decoded one frame at a time), ``width`` x
    ``height``; returns RGB uint8 [F, height, width, 3] and the frame rate."""
    images, empty = [], 0
    try:
        with VideoReader(path, max_frames) as video, \
                _bar(progress, total=len(video) or None, desc="densepose", unit="frame") as bar:
            fps = video.fps
            for frame in video:
                image, people = densepose.render(frame, width, height, fit)
                images.append(image)
                empty += not people
                bar.update(1)
    except VideoError as e:
        raise JobError(f"--driving {e}") from e
    if empty == len(images):
        raise JobError(f"--driving {path}: DensePose found no person in any of its {len(images)} frames; "
                       "use a video where one person's body is visible")
    if empty:
        log.warning("DensePose found nobody in %d of %d frames of %s; those frames are background", empty,
                    len(images), path)
    return np.stack(images), fps


def driving_densepose(kind, driving, root, width, height, *, max_frames, fps, device, progress):
    """MagicAnimate's control images and frame rate: DensePose on a driving video, or a folder of DensePose
    images (e.g. comfyui_controlnet_aux's) used as they are."""
    if kind == "json":
        raise JobError(f"--driving {driving}: these networks are driven by DensePose images, which keypoints "
                       "cannot give; give the driving video or a folder of DensePose images")
    if kind == "images":
        return pose_images_from_folder(driving, width, height, max_frames), fps or POSE_FPS
    from . import generate as gen

    device, _ = gen.torch_settings(device, None)
    path = dp.locate_model(dp.MODEL_FILE, [os.path.join(root, dl.DENSEPOSE_DIR)])
    images, video_fps = densepose_video(driving, dp.DensePose.from_file(path, device), width, height, max_frames,
                                        progress)
    return images, fps or video_fps


def character_pose(character, dwpose, fix=""):
    """DWPose on the character image (a PIL image); one line naming --character when nobody is found."""
    subject = dwpose.detect(np.asarray(character))
    if not subject.people:
        raise JobError("--character: DWPose found no person in the character image; use an image that shows "
                       f"the character's body{fix}")
    return subject


def driving_poses(kind, driving, character, dwpose, *, max_frames, retarget, smooth, fps, progress, subject=None):
    """PoseFrames on the character's canvas (retargeted unless ``retarget == "off"``) and the frame rate.
    ``driving``: a path, or the PoseFrames already read from a JSON file; ``subject``: the character's
    PoseFrame when known (else DWPose finds it)."""
    if kind == "video":
        poses, video_fps = video_poses(driving, dwpose, max_frames, progress)
        fps = fps or video_fps
    else:
        poses = driving if isinstance(driving, list) else pose_frames_from_json(driving, max_frames)
        fps = fps or POSE_FPS
    if smooth != "none":
        params = {"fps": float(fps)} if smooth == "one_euro" else {}
        poses = smooth_frames(poses, smooth, **params)
    if retarget == "off":
        return poses, fps
    if subject is None:
        subject = character_pose(character, dwpose, ", or --retarget off to use the driving poses as they are")
    try:
        if retarget == "unianimate":
            return retarget_frames(poses, subject, placement="neck", method="unianimate"), fps
        return retarget_frames(poses, subject, placement=retarget), fps
    except ValueError as e:
        raise JobError(f"retargeting the driving poses to the character failed: {e}. "
                       "--retarget off uses the driving poses as they are") from e


# ---------------------------------------------------------------------------------------------- the job


def _reference_pose(subject, ref_pose_file, width, height):
    """UniAnimate's reference pose, uint8 [H, W, 3]: the folder's ``ref_pose`` image (bilinear, as its
    loader), else the character's pose drawn in its style."""
    if ref_pose_file:
        return np.array(load_image(ref_pose_file, "pose image").resize((width, height), Image.BILINEAR))
    return render_frames([subject], width, height, style="unianimate")[0]


def _conditioning(family, image, width, height, root, device, dtype, cache):
    """The VAE and ``animate``'s reference inputs for ``family``, with a description of where the
    embeddings came from."""
    from . import generate as gen

    if family == "unianimate":
        vae_path = dl.located(root, dl.UNIANIMATE["vae"][0])
        clip_path = dl.located(root, dl.UNIANIMATE["clip_vision"][0])
        vae = _cached(cache, "vae", (vae_path, device, dtype), lambda: gen.load_checkpoint_vae(vae_path, device, dtype))
        clip = _cached(cache, "open_clip", (clip_path, device, dtype),
                       lambda: gen.load_open_clip(clip_path, device, dtype))
        inputs = gen.unianimate_conditioning(image, width, height, vae, clip)
        return vae, inputs, inputs["image_embeds"], f"OpenCLIP in {clip_path}"
    vae_dir = os.path.join(root, dl.VAE_DIR)
    vae = _cached(cache, "vae", (vae_dir, device, dtype), lambda: gen.load_vae(vae_dir, device, dtype))
    if family in DENSEPOSE_FAMILIES:
        text_folder = os.path.join(root, dl.TEXT_ENCODER_DIR)
        embeds = _cached(cache, "text_embeds", (text_folder, device, dtype),
                         lambda: gen.empty_prompt_embeds(text_folder, device, dtype))
        inputs = {"reference_latents": gen.reference_latents(image, width, height, vae), "text_embeds": embeds}
        return vae, inputs, embeds, f"the text encoder in {text_folder}"
    clip_dir = os.path.join(root, dl.CLIP_DIR)
    encoder = _cached(cache, "clip_vision", (clip_dir, device, dtype),
                      lambda: gen.load_image_encoder(clip_dir, device, dtype))
    latents, embeds = gen.reference_conditioning(image, width, height, vae, encoder)
    return vae, {"reference_latents": latents, "image_embeds": embeds}, embeds, f"the image encoder in {clip_dir}"


def animate_video(character, driving, output=None, *, models=None, comfyui=None, networks=None, variant=None,
                  width=None, height=None, frames=None, fps=None, steps=None, cfg=None, seed=42, sampler=None,
                  beta_schedule=None, context=None, retarget="neck", smooth="none", device=None, dtype=None,
                  decode_chunk=8, download=False, overwrite=False, progress=True, pose_temperature=0.0, cache=None,
                  workers=None, ray=None, first_frame=False):
    """Animate ``character`` (an image file) with ``driving`` (a video, a POSE_KEYPOINT JSON file or a
    folder of pose images) and write ``output`` (.mp4). Returns a dict describing what was written.
    ``character``/``driving`` None: the project's own figure and dance loop (``assets/``).

    ``models``/``comfyui``: the models folder (see :mod:`.download`); ``networks``: a folder with the
    variant's network files instead of ``MODELS/animate_anyone/<variant>``; ``steps``/``cfg`` None: the
    family's defaults; ``context``: the engine's context-window options; ``download``: fetch missing
    model files first (network); ``overwrite``: replace an existing ``output`` (never one of the inputs);
    ``pose_temperature``: TCAN's pose temperature map (0 = off, 3 = TCAN); ``first_frame`` (UniAnimate):
    condition the first frame on the character image instead of the reference frame;
    ``cache``: a dict the caller keeps between calls, in which the models loaded stay for the next
    call that needs the same ones (the batch workers load them once); ``workers``: spread each step's
    context windows over this many Ray workers (on the cluster at ``ray``, default a local Ray).
    """
    if retarget not in RETARGET:
        raise JobError(f"--retarget {retarget} is not valid; valid choices: {', '.join(RETARGET)}")
    get_smoother(smooth)
    check_options(frames=frames, fps=fps, steps=steps, cfg=cfg, seed=seed, context=context, decode_chunk=decode_chunk)
    check_parallel(workers, ray)
    if not pose_temperature >= 0:
        raise JobError(f"--pose-temperature must be 0 (off) or more (TCAN uses 3), got {pose_temperature}")
    if dtype not in (None, *DTYPES):
        raise JobError(f"--dtype {dtype} is not valid; valid choices: {', '.join(DTYPES)}")
    from . import generate as gen

    device, dtype = gen.torch_settings(device, dtype)
    if output is None:
        raise JobError("-o is required: the video to write, e.g. -o out.mp4")
    subject = None
    if character is None:
        character = DEFAULT_CHARACTER
        subject = pose_frames_from_json(DEFAULT_CHARACTER_POSE)[0]
        log.info("no --character: animating the project's example figure (%s)", character)
    if driving is None:
        driving = DEFAULT_DRIVING
        log.info("no --driving: using the project's example dance (%s)", driving)
    image = load_image(character)
    width, height = video_size(width, height, *image.size)
    kind = driving_kind(driving)
    json_frames = pose_frames_from_json(driving, frames) if kind == "json" else None
    output, partial = prepare_output(output, (("--character", character), ("--driving", driving)), overwrite)
    try:
        if kind == "images":
            for name in pose_image_names(driving)[:frames]:
                check_image(os.path.join(driving, name), "pose image")
        if kind == "video":
            try:
                with VideoReader(driving):
                    pass
            except VideoError as e:
                raise JobError(f"--driving {e}") from e
        root = dl.models_dir(models, comfyui)
        variant = pick_variant(root, variant)
        dense = variant in DENSEPOSE_FAMILIES
        uni = variant == "unianimate"
        if first_frame and not uni:
            raise JobError(f"--first-frame is UniAnimate's (--variant unianimate); {variant} networks have no such "
                           "input: leave it out")
        ref_pose_file = reference_pose_file(driving) if uni and kind == "images" else None
        # MagicAnimate reads SD1.5's text embedding of the empty prompt instead of a CLIP image embedding.
        components = ["networks", "vae", "text_encoder" if dense else "clip_vision"]
        if dense and kind == "video":
            components.append("densepose")
        elif not dense and (kind == "video" or (subject is None and (
                (kind == "json" and retarget != "off") or (uni and not ref_pose_file)))):
            components.append("dwpose")
        ensure_models(root, variant, components, networks, download)

        dwpose = None
        if "dwpose" in components:
            folder = os.path.join(root, dl.DWPOSE_DIR)
            providers = ["CPUExecutionProvider"] if device.type == "cpu" else None
            dwpose = _cached(cache, "dwpose", (folder, providers), lambda: DWPose(
                locate_model(DETECTOR_FILE, [folder]), locate_model(POSE_FILE, [folder]), providers))
        if uni and subject is None and not ref_pose_file:
            subject = character_pose(image, dwpose, " (UniAnimate needs the character's pose)")
        if dense:
            pose_images, fps = driving_densepose(kind, driving, root, width, height, max_frames=frames, fps=fps,
                                                 device=device, progress=progress)
        elif kind == "images":
            pose_images = pose_images_from_folder(driving, width, height, frames,
                                                  Image.BILINEAR if uni else Image.LANCZOS)
            fps = fps or POSE_FPS
        else:
            poses, fps = driving_poses(kind, json_frames or driving, image, dwpose, max_frames=frames,
                                       retarget=retarget, smooth=smooth, fps=fps, progress=progress, subject=subject)

        import torch

        from ..models.loading import load_models
        from ..sampling.context import count_unet_passes
        from ..sampling.families import context_settings, get_family, timestep_count
        from ..sampling.engine import animate
        net_folder = networks or os.path.join(root, dl.networks_dir(variant))
        log.info("loading the networks from %s (%s, %s)", net_folder, device, dtype)
        nets = _cached(cache, "networks", (net_folder, device, dtype),
                       lambda: load_models(net_folder, device=device, dtype=dtype))
        family = nets.family
        if family != variant and (family in DENSEPOSE_FAMILIES or family == "unianimate" or dense or uni):
            raise JobError(f"{net_folder} holds {family} networks, not {variant}; use --variant {family}")
        if family != variant:
            log.warning("%s holds %s networks (asked for %s): drawing poses in the %s style",
                        net_folder, family, variant, family)
        if kind != "images" and not dense:
            pose_images = render_frames(poses, width, height, style=family)
        extra = {"pose_temperature": pose_temperature}
        if uni:
            extra.update(reference_pose=torch.from_numpy(_reference_pose(subject, ref_pose_file, width, height)),
                         first_frame=first_frame)
        vae, conditioning, embeds, where = _conditioning(family, image, width, height, root, device, dtype, cache)
        if embeds.shape[-1] != nets.embed_dim:
            raise JobError(f"{where} gives {embeds.shape[-1]}-wide embeddings but the networks in {net_folder} "
                           f"expect {nets.embed_dim}")

        defaults = get_family(family)
        steps = defaults.steps if steps is None else steps
        cfg = defaults.cfg if cfg is None else cfg
        count = pose_images.shape[0]
        scheduler = {k: v for k, v in (("sampler", sampler), ("beta_schedule", beta_schedule)) if v is not None}
        log.info("animating %d frames at %dx%d, %d steps, cfg %s, seed %d", count, width, height, steps, cfg, seed)
        windows = count_unet_passes(count, context_settings(family, context), timestep_count(family, scheduler, steps),
                                    guidance=False)
        with contextlib.ExitStack() as stack, _bar(progress, total=windows, desc="denoising", unit="window") as bar:
            run = animate
            if workers:
                from ..sampling.parallel import WindowWorkers

                log.info("starting %d window workers on %s", workers, ray or "a local Ray")
                run = stack.enter_context(WindowWorkers(net_folder, workers=workers, address=ray, device=device,
                                                        dtype=dtype)).animate
            result = run(nets, **conditioning, pose_images=torch.from_numpy(pose_images), seed=seed,
                         steps=steps, cfg=cfg, scheduler=scheduler, context=context,
                         callback=gen.ProgressCallback(bar), **extra)
        del nets
        with VideoWriter(partial, width, height, fps) as writer, \
                _bar(progress, total=count, desc="decoding", unit="frame") as bar:
            gen.decode(vae, result, writer, decode_chunk, bar)
        os.replace(partial, output)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    log.info("wrote %s (%d frames, %dx%d, %s fps)", output, count, width, height, fps)
    return {"path": output, "frames": count, "width": width, "height": height, "fps": fps, "variant": variant}
