"""A stand-in for ``densepose_r50_fpn_dl.torchscript`` with its interface, built with torch.jit.script.

Input: one RGB uint8 image ``[3, H, W]``. Each entry of ``channels`` is a "person": the pixels where that
channel exceeds both others by more than ``threshold`` (a saturated red box for channel 0). For each
person found it returns the box around those pixels (x0, y0, x1, y1), a coarse segmentation whose body
logit is positive where the box's pixels belong to the person (the silhouette resampled to 112 x 112),
a fine segmentation that lays the 24 parts out like a standing person facing the camera
(:data:`LAYOUT`), and U, V that run from 0 to 1 across the box. Nobody found: N = 0 tensors.
"""

import os
import warnings
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 112
PARTS = 24


def layout(size=SIZE):
    """Part index [size, size] of a standing person filling the box (DensePose's part numbering: the
    person's right side on the image's left)."""
    v, u = np.mgrid[:size, :size] / size
    parts = np.full((size, size), 2)  # torso, front
    parts[v < 0.18] = 23
    parts[(v < 0.18) & (u >= 0.5)] = 24
    arm = (v >= 0.18) & (v < 0.58)
    for side, (upper, lower, hand) in ((u < 0.2, (16, 20, 3)), (u >= 0.8, (15, 19, 4))):
        parts[arm & side & (v < 0.36)] = upper
        parts[arm & side & (v >= 0.36)] = lower
        parts[arm & side & (v >= 0.52)] = hand
    for side, (upper, lower, foot) in ((u < 0.5, (9, 13, 6)), (u >= 0.5, (10, 14, 5))):
        leg = (v >= 0.58) & side
        parts[leg & (v < 0.77)] = upper
        parts[leg & (v >= 0.77)] = lower
        parts[leg & (v >= 0.94)] = foot
    return parts


LAYOUT = layout()


class DensePoseStandIn(torch.nn.Module):
    def __init__(self, channels: List[int], threshold: float = 100.0):
        super().__init__()
        fine = torch.from_numpy(np.eye(PARTS + 1, dtype=np.float32)[LAYOUT]).permute(2, 0, 1) * 4.0
        ramp = torch.linspace(0.0, 1.0, SIZE)
        self.register_buffer("fine", fine)
        self.register_buffer("u", ramp[None, None, :].expand(PARTS + 1, SIZE, SIZE).clone())
        self.register_buffer("v", ramp[None, :, None].expand(PARTS + 1, SIZE, SIZE).clone())
        self.channels = channels
        self.threshold = threshold

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                   torch.Tensor]:
        x = image.to(self.fine.dtype)
        channels, size = self.fine.shape[0], self.fine.shape[-1]
        boxes: List[torch.Tensor] = []
        coarse: List[torch.Tensor] = []
        for c in self.channels:
            others = torch.cat([x[:c], x[c + 1:]]).max(dim=0).values
            mask = (x[c] - others) > self.threshold
            if bool(mask.any()):
                rows = mask.any(dim=1).nonzero()[:, 0]
                cols = mask.any(dim=0).nonzero()[:, 0]
                y0, y1 = int(rows.min()), int(rows.max()) + 1
                x0, x1 = int(cols.min()), int(cols.max()) + 1
                crop = mask[y0:y1, x0:x1].to(self.fine.dtype)[None, None]
                silhouette = F.interpolate(crop, size=[size, size], mode="bilinear", align_corners=False)[0, 0]
                coarse.append(torch.stack([0.5 - silhouette, silhouette - 0.5]))
                boxes.append(torch.tensor([x0, y0, x1, y1], dtype=self.fine.dtype, device=image.device))
        n = len(boxes)
        if n == 0:
            empty = torch.zeros((0, channels, size, size), dtype=self.fine.dtype, device=image.device)
            return (torch.zeros((0, 4), dtype=self.fine.dtype, device=image.device),
                    torch.zeros((0, 2, size, size), dtype=self.fine.dtype, device=image.device), empty, empty, empty)
        shape = [n, channels, size, size]
        return (torch.stack(boxes), torch.stack(coarse), self.fine.expand(shape), self.u.expand(shape),
                self.v.expand(shape))


def write_densepose(path, channels=(0,), threshold=100.0):
    """Save the stand-in as a TorchScript file at ``path``; returns ``path``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        module = torch.jit.script(DensePoseStandIn(list(channels), threshold))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    module.save(str(path))
    return path
