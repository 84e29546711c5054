"""Released fp32 pickles -> half-precision safetensors, checked tensor by tensor.

Every floating-point tensor is copied (a MusePose file's tensors are views of one buffer, which
safetensors cannot store) and cast; AnimateDiff's ``pos_encoder.pe`` tables stay float32 (a few
KB; the files keep the exact sinusoid, which the loader checks and then regenerates; it accepts
float16-rounded tables too). After writing, the file is read back and every key must be there with the source's
shape and exactly the source's value cast to the new dtype.
"""

import errno
import logging
import os
import re
import shutil

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..models.loading import ROLES, WEIGHT_EXTENSIONS, detect_role, first_line, read_state_dict
from ..models.unianimate import is_unianimate
from .files import same_file, temporary_file, temporary_folder

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


def write_checked(sd, src, dst, dtype):
    """Write ``sd`` (read from ``src``) as safetensors in ``dtype`` to a temporary file of our own next
    to ``dst``, check it, then move it to ``dst``."""
    partial = temporary_file(os.path.dirname(dst), f".{os.path.basename(dst)}.", ".partial")
    try:
        try:
            save_file(cast_state_dict(sd, dtype), partial, metadata={"format": "pt", "source": os.path.basename(src)})
        except (OSError, SafetensorError) as e:
            raise ConvertError(f"writing {dst} failed ({_write_problem(e)}); free some space or choose another "
                               "destination") from e
        check_file(partial, sd, dtype)
        os.replace(partial, dst)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return len(sd)


def _write_problem(error):
    text = " ".join(str(error).split())
    found = re.search(r"os error (\d+)|code: (\d+)", text)
    code = getattr(error, "errno", None) or (int(found.group(1) or found.group(2)) if found else None)
    words = {errno.ENOSPC: "no space left on the disk", errno.EFBIG: "the file is too large for this disk or account",
             errno.EDQUOT: "the disk quota is used up", errno.EACCES: "permission denied"}
    return words.get(code) or first_line(text)


def convert_state_dict(sd, src, dst, dtype):
    """Write ``sd`` (read from ``src``) to ``dst`` as safetensors in ``dtype`` and check it."""
    if os.path.exists(dst):
        raise ConvertError(f"{dst} already exists; remove it or choose another destination")
    return write_checked(sd, src, dst, dtype)


def is_conversion(path, sd, dtype):
    """Whether ``path`` already holds ``sd`` converted to ``dtype`` (a finished earlier run)."""
    try:
        check_file(path, sd, dtype)
    except (ConvertError, OSError, SafetensorError):
        return False
    return True


def in_dtype(sd, dtype):
    return all(v.dtype == target_dtype(k, v, dtype) for k, v in sd.items())


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


def _check_folder(folder, what):
    if not os.path.isdir(folder):
        raise ConvertError(f"{what}: the folder {folder} does not exist; create it first or choose another destination")


def convert(src, dst=None, dtype="fp16", replace=False, report=print):
    """Convert one file, or every Animate Anyone network file (and UniAnimate UNet file) of a folder, to
    ``dtype`` safetensors.

    Folder: ``dst`` defaults to ``<src>-fp16``; ``replace`` writes next to the sources instead and
    deletes the sources once every converted file has passed the check. A folder is converted
    all or nothing: the files are written to a temporary folder and moved into place at the end;
    files a finished earlier run wrote are recognised and kept, so a rerun completes an
    interrupted one. Returns the files written or found converted.
    """
    torch_dtype = get_dtype(dtype)
    if not os.path.exists(src):
        raise ConvertError(f"{src}: no such file or folder")
    if replace and dst:
        raise ConvertError("--replace writes the converted files next to the sources: give no destination")
    src = os.path.abspath(src)
    dst = os.path.abspath(dst) if dst else default_destination(src, dtype, replace)
    if os.path.isdir(src):
        return _convert_folder(src, dst, dtype, torch_dtype, replace, report)
    if os.path.isdir(dst):
        dst = os.path.join(dst, _dst_name(src, dtype))
    _check_folder(os.path.dirname(dst), dst)
    if os.path.exists(dst) and same_file(src, dst):
        raise ConvertError(f"{dst} is the source file; choose another destination")
    sd = read_state_dict(src)
    if src.endswith(".safetensors") and in_dtype(sd, torch_dtype):
        report(f"kept {src}: already {dtype}")
        return [src]
    count = convert_state_dict(sd, src, dst, torch_dtype)
    report(f"{src} ({_gb(src):.2f} GB) -> {dst} ({_gb(dst):.2f} GB): {count} tensors checked")
    if replace:
        os.remove(src)
        report(f"removed {src}")
    return [dst]


def _convert_folder(src, dst, dtype_name, dtype, replace, report):
    names = sorted(n for n in os.listdir(src) if n.lower().endswith(WEIGHT_EXTENSIONS)
                   and os.path.isfile(os.path.join(src, n)))
    if not os.path.isdir(dst):
        _check_folder(os.path.dirname(dst), dst)
    staging = temporary_folder(dst if os.path.isdir(dst) else os.path.dirname(dst), ".poseanimate-convert-")
    done, staged, sources = [], [], []
    try:
        for name in names:
            path = os.path.join(src, name)
            sd = read_state_dict(path)
            role = detect_role(sd)
            if role not in ROLES and not is_unianimate(sd):
                report(f"skipped {name}: {role}, not an Animate Anyone network or a UniAnimate UNet")
                continue
            if replace and name.endswith(".safetensors") and in_dtype(sd, dtype):
                report(f"kept {name}: already {dtype_name}")
                done.append(path)
                continue
            out = os.path.join(dst, _dst_name(path, dtype_name))
            if out in staged or out in done:
                raise ConvertError(f"two files in {src} convert to {os.path.basename(out)}; keep one of them")
            if os.path.exists(out):
                if not is_conversion(out, sd, dtype):
                    raise ConvertError(f"{out} already exists and is not a conversion of {path}; remove it or choose "
                                       "another destination")
                report(f"kept {out}: already converted from {name}")
                done.append(out)
            else:
                count = write_checked(sd, path, os.path.join(staging, os.path.basename(out)), dtype)
                report(f"{path} ({_gb(path):.2f} GB) -> {out}: {count} tensors checked")
                staged.append(out)
            sources.append(path)
            del sd
        if not staged and not done:
            raise ConvertError(f"{src} holds no Animate Anyone network files ({', '.join(ROLES)}) and no UniAnimate "
                               "UNet")
        if not os.path.isdir(dst):
            os.rename(staging, dst)
        else:
            for out in staged:
                os.replace(os.path.join(staging, os.path.basename(out)), out)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    if replace:
        for path in sources:
            os.remove(path)
            report(f"removed {path}")
    return staged + done
