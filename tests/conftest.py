import os

import pytest
import torch

DATA = os.path.join(os.path.dirname(__file__), "data")
MOORE_TINY = os.path.join(DATA, "parity", "moore-tiny")


@pytest.fixture(scope="session")
def tiny_models():
    import poseanimate

    return poseanimate.load_models(MOORE_TINY, device="cpu", dtype=torch.float32)


def read_rgb(path):
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
