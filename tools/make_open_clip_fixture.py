"""Make tests/data/open_clip/expected.safetensors with the real open_clip package (not a test dependency).

A tiny OpenCLIP model built by open_clip (its ``CLIP`` class, ViT image tower and text tower, the
released key names) gets weights that are a function of each key's name (``tests/open_clip_weights.py``,
so the test rebuilds them without storing 25 MB of token embeddings); then:

* ``image_embeds``: ``model.visual(pixels)`` for seeded pixels (UniAnimate's ``encode_image``);
* ``zero_y``: UniAnimate's ``FrozenOpenCLIPTextVisualEmbedder(layer="penultimate")`` on ``""``:
  ``open_clip.tokenize("")``, token + positional embeddings, every resblock but the last with the
  model's causal mask, ``ln_final``.

Run with an environment that has open_clip_torch:  python tools/make_open_clip_fixture.py
"""

import json
import os
import sys

import open_clip
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from open_clip_weights import TINY, pixels, weight  # noqa: E402


def main():
    torch.set_num_threads(1)
    model = open_clip.model.CLIP(
        TINY["embed_dim"],
        vision_cfg=dict(image_size=TINY["image_size"], layers=TINY["vision_layers"], width=TINY["vision_width"],
                        head_width=TINY["vision_head_width"], patch_size=TINY["patch"]),
        text_cfg=dict(context_length=77, vocab_size=49408, width=TINY["text_width"], heads=TINY["text_heads"],
                      layers=TINY["text_layers"]))
    sd = model.state_dict()
    model.load_state_dict({k: weight(k, v.shape) for k, v in sd.items()}, strict=True)
    model.eval()
    with torch.no_grad():
        image_embeds = model.visual(pixels())
        tokens = open_clip.tokenize("")
        x = model.token_embedding(tokens) + model.positional_embedding
        batch_first = getattr(model.transformer, "batch_first", False)
        if not batch_first:
            x = x.permute(1, 0, 2)
        for block in model.transformer.resblocks[:-1]:
            x = block(x, attn_mask=model.attn_mask)
        if not batch_first:
            x = x.permute(1, 0, 2)
        zero_y = model.ln_final(x)
    vit_h = open_clip.get_model_config("ViT-H-14")
    meta = {"open_clip": open_clip.__version__, "torch": torch.__version__, "shapes": {k: list(v.shape) for k, v in sorted(sd.items())},
            "tokens": tokens[0, :4].tolist(),
            "vit_h_14": {"vision_width": vit_h["vision_cfg"]["width"],
                         "vision_heads": vit_h["vision_cfg"]["width"] // vit_h["vision_cfg"]["head_width"],
                         "text_width": vit_h["text_cfg"]["width"], "text_heads": vit_h["text_cfg"]["heads"]}}
    out = os.path.join(HERE, "..", "tests", "data", "open_clip")
    os.makedirs(out, exist_ok=True)
    save_file({"image_embeds": image_embeds.contiguous(), "zero_y": zero_y.contiguous()},
              os.path.join(out, "expected.safetensors"), metadata={"meta": json.dumps(meta)})
    print("image_embeds", tuple(image_embeds.shape), "zero_y", tuple(zero_y.shape), "std",
          float(image_embeds.std()), float(zero_y.std()))


if __name__ == "__main__":
    main()
