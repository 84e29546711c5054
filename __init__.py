"""PoseAnimate: Animate Anyone / MusePose for ComfyUI and Python.

Importing this package does no work: the library modules load on first use and the ComfyUI
nodes load only when ComfyUI calls ``comfy_entrypoint``.
"""

__all__ = ["load_models", "animate", "comfy_entrypoint"]

WEB_DIRECTORY = "./web"


def __getattr__(name):
    if name == "load_models":
        from .models.loading import load_models

        return load_models
    if name == "animate":
        from .sampling.engine import animate

        return animate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def comfy_entrypoint():
    from .nodes import extension

    return extension.PoseAnimateExtension()
