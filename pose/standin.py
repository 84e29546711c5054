"""Stand-in ONNX models with the interfaces of the released DWPose files, for tests and benchmarks.

They are tiny graphs with known answers, built with ``onnx.helper`` (the ``onnx`` package is
needed only here, and only when a builder is called):

* detector (``images`` [1, 3, 640, 640] -> ``output`` [1, 8400, 85]): for each requested
  input channel, the bounding box of the pixels brighter than a threshold in that channel,
  written as a YOLOX prediction on a stride-32 anchor; plus any constant predictions.
* pose model (``input`` [N, 3, 384, 288] -> ``simcc_x`` [N, 133, 576], ``simcc_y``
  [N, 133, 768]): ``"blob"`` puts every keypoint's peak on the brightest row and column of
  its crop (channel sum); ``"fixed"`` emits constant peaks at given bins with given heights.
  The batch dimension is dynamic unless a fixed batch size is asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

OPSET = 17
IR_VERSION = 8
DETECTOR_SIZE = 640
ANCHORS = 8400
FIRST_STRIDE32_ANCHOR = 80 * 80 + 40 * 40
POSE_H, POSE_W = 384, 288
KEYPOINTS = 133
SPLIT = 2


@dataclass(frozen=True)
class FixedBox:
    """A constant YOLOX prediction: centre and size in letterboxed pixels, objectness, class."""

    cx: float
    cy: float
    w: float
    h: float
    objectness: float
    class_index: int = 0
    class_score: float = 1.0


@dataclass(frozen=True)
class ChannelBox:
    """A prediction boxing the pixels of input ``channel`` (BGR order) above ``threshold``."""

    channel: int
    objectness: float = 0.9
    class_score: float = 1.0
    threshold: float = 150.0
    size_factor: float = 1.0


class _Graph:
    def __init__(self):
        from onnx import helper

        self.helper = helper
        self.nodes = []
        self.initializers = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def save(self, path, inputs, outputs, output_names: dict[str, list]) -> str:
        import onnx

        for produced, wanted in zip(outputs, output_names):
            self.nodes.append(self.helper.make_node("Identity", [produced], [wanted]))
        graph = self.helper.make_graph(self.nodes, "standin", inputs, [
            self.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)
            for name, shape in output_names.items()
        ], self.initializers)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", OPSET)],
                                       ir_version=IR_VERSION)
        onnx.checker.check_model(model)
        onnx.save(model, os.fspath(path))
        return os.fspath(path)


def _channel_box_row(g: _Graph, image: str, spec: ChannelBox, grid_x: int) -> str:
    plane = g.op("Slice", [image, g.const([spec.channel]), g.const([spec.channel + 1]), g.const([1])])
    mask = g.op("Cast", [g.op("Greater", [plane, g.const(np.float32(spec.threshold))])], to=1)
    cols = g.op("ReduceMax", [mask], axes=[1, 2], keepdims=0)
    rows = g.op("ReduceMax", [mask], axes=[1, 3], keepdims=0)

    def extent(profile: str) -> tuple[str, str]:
        first = g.op("Cast", [g.op("ArgMax", [profile], axis=1, keepdims=0)], to=1)
        flipped = g.op("Slice", [profile, g.const([-1]), g.const([np.iinfo(np.int64).min]),
                                 g.const([1]), g.const([-1])])
        from_end = g.op("Cast", [g.op("ArgMax", [flipped], axis=1, keepdims=0)], to=1)
        last_plus_one = g.op("Sub", [g.const(np.float32(DETECTOR_SIZE)), from_end])
        center = g.op("Mul", [g.op("Add", [first, last_plus_one]), g.const(np.float32(0.5))])
        size = g.op("Sub", [last_plus_one, first])
        return center, size

    cx, w = extent(cols)
    cy, h = extent(rows)
    stride = g.const(np.float32(32))
    raw_x = g.op("Sub", [g.op("Div", [cx, stride]), g.const(np.float32(grid_x))])
    raw_y = g.op("Div", [cy, stride])
    factor = g.const(np.float32(spec.size_factor))
    raw_w = g.op("Log", [g.op("Div", [g.op("Mul", [w, factor]), stride])])
    raw_h = g.op("Log", [g.op("Div", [g.op("Mul", [h, factor]), stride])])
    anything = g.op("ReduceMax", [cols], axes=[1], keepdims=0)
    objectness = g.op("Mul", [anything, g.const(np.float32(spec.objectness))])
    classes = np.zeros((1, 80), dtype=np.float32)
    classes[0, 0] = spec.class_score
    head = g.op("Concat", [raw_x, raw_y, raw_w, raw_h, objectness], axis=0)
    return g.op("Concat", [g.op("Unsqueeze", [head, g.const([0])]), g.const(classes)], axis=1)


def _fixed_box_row(g: _Graph, box: FixedBox, grid_x: int) -> str:
    row = np.zeros(85, dtype=np.float32)
    row[:4] = [box.cx / 32 - grid_x, box.cy / 32, np.log(box.w / 32), np.log(box.h / 32)]
    row[4] = box.objectness
    row[5 + box.class_index] = box.class_score
    return g.const(row[None])


def build_detector(path, channel_boxes: Sequence[ChannelBox] = (ChannelBox(2),),
                   fixed_boxes: Sequence[FixedBox] = ()) -> str:
    """A YOLOX stand-in; each box takes the next stride-32 anchor of the first grid row."""
    from onnx import TensorProto, helper

    g = _Graph()
    image = "images"
    rows = [_channel_box_row(g, image, spec, i) for i, spec in enumerate(channel_boxes)]
    rows += [_fixed_box_row(g, box, len(rows) + i) for i, box in enumerate(fixed_boxes)]
    if len(rows) > 40:
        raise ValueError("at most 40 stand-in boxes (one stride-32 grid row)")
    parts = [g.const(np.zeros((FIRST_STRIDE32_ANCHOR, 85), np.float32))] + rows
    parts.append(g.const(np.zeros((ANCHORS - FIRST_STRIDE32_ANCHOR - len(rows), 85), np.float32)))
    table = g.op("Unsqueeze", [g.op("Concat", parts, axis=0), g.const([0])])
    inputs = [helper.make_tensor_value_info(image, TensorProto.FLOAT, [1, 3, DETECTOR_SIZE, DETECTOR_SIZE])]
    return g.save(path, inputs, [table], {"output": [1, ANCHORS, 85]})


def fixed_simcc(bins_x: np.ndarray, bins_y: np.ndarray, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Constant SimCC maps [133, 576] and [133, 768] with a peak of height ``peaks[k]`` at the given bins."""
    simcc_x = np.full((KEYPOINTS, POSE_W * SPLIT), -1.0, dtype=np.float32)
    simcc_y = np.full((KEYPOINTS, POSE_H * SPLIT), -1.0, dtype=np.float32)
    k = np.arange(KEYPOINTS)
    simcc_x[k, np.asarray(bins_x)] = peaks
    simcc_y[k, np.asarray(bins_y)] = peaks
    return simcc_x, simcc_y


def build_pose_model(path, mode: str = "blob", batch: int | None = None, gain: float = 0.2,
                     bins_x: np.ndarray | None = None, bins_y: np.ndarray | None = None,
                     peaks: np.ndarray | None = None, float16: bool = False) -> str:
    """A DWPose whole-body stand-in (see the module docstring); ``batch=None`` is a dynamic batch,
    ``float16`` declares a half-precision input (cast to float inside)."""
    from onnx import TensorProto, helper

    if mode not in ("blob", "fixed"):
        raise ValueError(f"unknown stand-in pose mode {mode!r}; valid choices: blob, fixed")
    g = _Graph()
    source = "input"
    image = g.op("Cast", [source], to=TensorProto.FLOAT) if float16 else source
    batch_dim = "N" if batch is None else batch
    batch_size = g.op("Slice", [g.op("Shape", [image]), g.const([0]), g.const([1]), g.const([0])])

    def expand(profile: str, length: int) -> str:
        shape = g.op("Concat", [batch_size, g.const([KEYPOINTS, length])], axis=0)
        return g.op("Expand", [profile, shape])

    if mode == "blob":
        total = g.op("ReduceSum", [image, g.const([1])], keepdims=0)
        outputs = []
        for axis, length in ((1, POSE_W), (2, POSE_H)):
            profile = g.op("ReduceMax", [total], axes=[axis], keepdims=0)
            doubled = g.op("Concat", [g.op("Unsqueeze", [profile, g.const([2])])] * SPLIT, axis=2)
            flat = g.op("Reshape", [doubled, g.const([0, length * SPLIT])])
            scaled = g.op("Mul", [flat, g.const(np.float32(gain))])
            outputs.append(expand(g.op("Unsqueeze", [scaled, g.const([1])]), length * SPLIT))
    else:
        if bins_x is None or bins_y is None:
            raise ValueError("a fixed stand-in pose model needs bins_x and bins_y (133 bins each)")
        simcc_x, simcc_y = fixed_simcc(bins_x, bins_y, np.ones(KEYPOINTS) if peaks is None else peaks)
        outputs = [expand(g.const(simcc_x[None]), POSE_W * SPLIT), expand(g.const(simcc_y[None]), POSE_H * SPLIT)]
    input_type = TensorProto.FLOAT16 if float16 else TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(source, input_type, [batch_dim, 3, POSE_H, POSE_W])]
    return g.save(path, inputs, outputs, {
        "simcc_x": [batch_dim, KEYPOINTS, POSE_W * SPLIT],
        "simcc_y": [batch_dim, KEYPOINTS, POSE_H * SPLIT],
    })
