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
