"""The ComfyExtension that ComfyUI gets from ``comfy_entrypoint()``."""

from comfy_api.latest import ComfyExtension

from . import common, densepose, models, pose, sampling


class PoseAnimateExtension(ComfyExtension):
    async def get_node_list(self):
        common.register_model_folders()
        return [*models.NODES, *pose.NODES, *densepose.NODES, *sampling.NODES]
