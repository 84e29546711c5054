"""The command line's pieces for MagicAnimate: the empty-prompt embedding from SD1.5's text encoder folder."""

import json

import pytest
import torch

from poseanimate.cli.pipeline import JobError

transformers = pytest.importorskip("transformers")


def write_text_encoder(folder, width=32):
    """A tiny CLIPTextModel and a CLIPTokenizer with a few tokens, laid out as the download writes them."""
    config = transformers.CLIPTextConfig(vocab_size=10, hidden_size=width, intermediate_size=2 * width,
                                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    transformers.CLIPTextModel(config).save_pretrained(folder)
    tokenizer = folder / "tokenizer"
    tokenizer.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
    (tokenizer / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer / "merges.txt").write_text("#version: 0.2\n")
    (tokenizer / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77, "pad_token": "<|endoftext|>"}))
    (tokenizer / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>"}))
    return folder


def test_empty_prompt_embeds(tmp_path):
    from poseanimate.cli.generate import empty_prompt_embeds

    folder = write_text_encoder(tmp_path / "text_encoder")
    embeds = empty_prompt_embeds(str(folder), torch.device("cpu"), torch.float32)
    assert embeds.shape == (1, 77, 32) and embeds.dtype == torch.float32
    model = transformers.CLIPTextModel.from_pretrained(folder)
    ids = torch.tensor([[0] + [1] * 76])  # BOS, then EOS padding: the empty prompt at max_length
    torch.testing.assert_close(embeds, model(ids)[0].detach(), atol=1e-6, rtol=0)


def test_missing_text_encoder_names_the_folder(tmp_path):
    from poseanimate.cli.generate import empty_prompt_embeds

    with pytest.raises(JobError, match=r"text encoder in .*nothing.*stable-diffusion-v1-5"):
        empty_prompt_embeds(str(tmp_path / "nothing"), torch.device("cpu"), torch.float32)


def test_animate_command_runs_magicanimate_on_a_driving_video(tmp_path):
    """poseanimate animate --variant magicanimate: DensePose (stand-in) on the video, the empty-prompt
    embedding from the text encoder folder, the MagicAnimate engine, a video out."""
    import os

    import cli_fixtures as fx
    from densepose_standin import write_densepose
    from poseanimate.cli import download as dl
    from poseanimate.cli import pipeline
    from poseanimate.pose import densepose as dp
    from tiny_models import person_frames, write_magicanimate_folder

    root = tmp_path / "models"
    write_magicanimate_folder(str(root / dl.networks_dir("magicanimate")), cross_attention_dim=32, seed=4)
    write_text_encoder(root / dl.TEXT_ENCODER_DIR)
    fx.write_vae(str(root / dl.VAE_DIR))
    os.makedirs(root / dl.DENSEPOSE_DIR)
    write_densepose(root / dl.DENSEPOSE_DIR / dp.MODEL_FILE)
    character = tmp_path / "character.png"
    fx.write_character(str(character), 64, 96)
    video = fx.write_video(str(tmp_path / "driving.mp4"), person_frames(5, 64, 96), 8)
    out = pipeline.animate_video(str(character), str(video), str(tmp_path / "out.mp4"), models=str(root),
                                 variant="magicanimate", width=64, height=96, steps=2, cfg=2.5, device="cpu",
                                 dtype="fp32", context={"length": 4, "overlap": 2}, progress=False)
    assert out["frames"] == 5 and out["variant"] == "magicanimate" and os.path.getsize(out["path"]) > 0
