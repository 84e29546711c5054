import contextlib
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

DATA = os.path.join(os.path.dirname(__file__), "data")
MOORE_TINY = os.path.join(DATA, "parity", "moore-tiny")
# The shared parity fixtures sit next to the repository (../shared/fixtures); POSEANIMATE_FIXTURES
# points elsewhere (e.g. from a git worktree).
SHARED_FIXTURES = os.environ.get("POSEANIMATE_FIXTURES") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "fixtures")


def shared_fixture(name):
    path = os.path.join(SHARED_FIXTURES, "parity", name)
    if not os.path.isdir(path):
        pytest.skip(f"shared parity fixture {path} is not here (set POSEANIMATE_FIXTURES to the fixtures folder)")
    return path


@pytest.fixture(scope="session")
def tiny_models():
    import poseanimate

    return poseanimate.load_models(MOORE_TINY, device="cpu", dtype=torch.float32)


@contextlib.contextmanager
def animate_anyone_folder(root):
    """ComfyUI's ``animate_anyone`` models folder is ``root`` inside the block (needs ComfyUI imported)."""
    import folder_paths

    saved = folder_paths.folder_names_and_paths["animate_anyone"]
    folder_paths.folder_names_and_paths["animate_anyone"] = ([str(root)], saved[1])
    try:
        yield root
    finally:
        folder_paths.folder_names_and_paths["animate_anyone"] = saved


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor every operation produces and how often each operation ran."""

    def __init__(self):
        super().__init__()
        self.largest, self.ops = 0, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket)
        self.ops[name] = self.ops.get(name, 0) + 1
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel())
        return out


def read_rgb(path):
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's modules, imported in this process from the checkout named by COMFYUI_PATH."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        pytest.skip("COMFYUI_PATH is not set: the node tests need a ComfyUI checkout (ComfyUI is not on PyPI) "
                    "and its requirements in this venv")
    if not os.path.isfile(os.path.join(path, "comfy", "model_management.py")):
        pytest.fail(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no comfy/model_management.py)")
    import sys

    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.cli_args

    # As if started with --cpu (ComfyUI picks CUDA otherwise) and --use-pytorch-cross-attention
    # (on the CPU ComfyUI's optimized_attention is otherwise sub-quadratic attention, ~4x slower here).
    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    comfy.cli_args.args.use_pytorch_cross_attention = True
    import comfy.model_management
    import comfy.utils
    import folder_paths

    return comfy


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray (2 CPUs) for every test that needs one: starting Ray takes seconds."""
    ray = pytest.importorskip("ray", reason="the batch and window-parallel tests need the ray extra: "
                                            "pip install -e '.[ray]'")
    if not ray.is_initialized():
        os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")  # a busy 2-core runner starts it slowly
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
