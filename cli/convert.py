"""Released fp32 pickles -> half-precision safetensors, checked tensor by tensor.

Every floating-point tensor is copied (a MusePose file's tensors are views of one buffer, which
safetensors cannot store) and cast; AnimateDiff's ``pos_encoder.pe`` tables stay float32 (a few
KB; the files keep the exact sinusoid, which the loader checks and then regenerates; it accepts
float16-rounded tables too). After writing, the file is read back and every key must be there with the source's
shape and exactly the source's value cast to the new dtype.
"""

import logging
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..models.loading import ROLES, WEIGHT_EXTENSIONS, detect_role, read_state_dict

log = logging.getLogger("poseanimate.cli")

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
KEEP_FLOAT32 = (".pos_encoder.pe",)


class ConvertError(ValueError):
    """A conversion that cannot be done or did not survive the check."""


def get_dtype(name):
    try:
        return DTYPES[name]
    except KeyError:
        raise ConvertError(f"unknown dtype {name!r}; valid choices: {', '.join(DTYPES)}") from None


def target_dtype(key, tensor, dtype):
    if not tensor.is_floating_point() or key.endswith(KEEP_FLOAT32):
        return tensor.dtype
    return dtype


def cast_state_dict(sd, dtype):
    """New, contiguous, unshared tensors: floating point ones cast to ``dtype``."""
    return {k: v.to(target_dtype(k, v, dtype), copy=True).contiguous() for k, v in sd.items()}


def check_file(path, sd, dtype):
    """Raise ConvertError unless ``path`` holds every key of ``sd`` with its shape and cast value."""
    with safe_open(path, "pt") as f:
        keys = set(f.keys())
        missing, extra = sd.keys() - keys, keys - sd.keys()
        if missing or extra:
            raise ConvertError(f"{path}: {len(missing)} keys missing and {len(extra)} unexpected after writing "
                               f"(e.g. {sorted(missing or extra)[0]})")
        for k, v in sd.items():
            saved = f.get_tensor(k)
            expected = v.to(target_dtype(k, v, dtype))
            if saved.shape != v.shape or saved.dtype != expected.dtype or not torch.equal(saved, expected):
                raise ConvertError(f"{path}: {k} did not survive the conversion (shape {tuple(saved.shape)}, "
                                   f"dtype {saved.dtype}; expected {tuple(v.shape)}, {expected.dtype})")


def convert_state_dict(sd, src, dst, dtype):
    """Write ``sd`` (read from ``src``) to ``dst`` as safetensors in ``dtype`` and check it."""
    if os.path.exists(dst):
        raise ConvertError(f"{dst} already exists; remove it or choose another destination")
    partial = dst + ".partial"
    try:
        save_file(cast_state_dict(sd, dtype), partial, metadata={"format": "pt", "source": os.path.basename(src)})
        check_file(partial, sd, dtype)
        os.replace(partial, dst)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return len(sd)


def _gb(path):
    return os.path.getsize(path) / 1e9


def _dst_name(src, dtype_name):
    stem = os.path.splitext(os.path.basename(src))[0]
    return f"{stem}.{dtype_name}.safetensors" if src.endswith(".safetensors") else f"{stem}.safetensors"


def default_destination(src, dtype_name, replace):
    src = os.path.abspath(src)
    if os.path.isdir(src):
        return src if replace else src.rstrip(os.sep) + f"-{dtype_name}"
    return os.path.join(os.path.dirname(src), _dst_name(src, dtype_name))


def convert(src, dst=None, dtype="fp16", replace=False, report=print):
    """Convert one file, or every Animate Anyone network file of a folder, to ``dtype`` safetensors.

    Folder: ``dst`` defaults to ``<src>-fp16``; ``replace`` writes next to the sources instead and
    deletes each source once its converted file has passed the check. Returns the files written.
    """
    torch_dtype = get_dtype(dtype)
    if not os.path.exists(src):
        raise ConvertError(f"{src}: no such file or folder")
    if replace and dst:
        raise ConvertError("--replace writes the converted files next to the sources: give no destination")
    dst = os.path.abspath(dst) if dst else default_destination(src, dtype, replace)
    if os.path.isdir(src):
        names = sorted(n for n in os.listdir(src) if n.lower().endswith(WEIGHT_EXTENSIONS)
                       and os.path.isfile(os.path.join(src, n)))
        sources = [os.path.join(src, n) for n in names]
    else:
        if os.path.isdir(dst):
            dst = os.path.join(dst, _dst_name(src, dtype))
        sources = [os.path.abspath(src)]
    written = []
    for path in sources:
        sd = read_state_dict(path)
        if os.path.isdir(src):
            role = detect_role(sd)
            if role not in ROLES:
                report(f"skipped {os.path.basename(path)}: {role}, not an Animate Anyone network")
                continue
            out = os.path.join(dst, _dst_name(path, dtype))
            os.makedirs(dst, exist_ok=True)
        else:
            out = dst
        count = convert_state_dict(sd, path, out, torch_dtype)
        del sd
        report(f"{path} ({_gb(path):.2f} GB) -> {out} ({_gb(out):.2f} GB): {count} tensors checked")
        written.append(out)
        if replace:
            os.remove(path)
            report(f"removed {path}")
    if not written:
        raise ConvertError(f"{src} holds no Animate Anyone network files ({', '.join(ROLES)})")
    return written
