"""Text-to-image (LlamaGen's t2i at emoji scale): captions as words, the left-padded prefix and its mask, caption
dropout and the null caption, guidance, sampling with and without the KV cache, and a run that trains on captions."""

import warnings

import pytest
import torch

import minivar
from minivar.models import build
from minivar.text import NULL, PAD, UNK, Captions, Vocabulary, prefix_attention, words_of
from minivar.text_to_image import TextToImageConfig
from minivar.train import TrainConfig, train
from tests.helpers import QUICK, tiny_train_config, tiny_vqvae_config

WORDS = Vocabulary.from_captions(["red apple", "green apple", "cat face", "woman farmer: medium skin tone"]).words


def tiny_t2i(**kw):
    torch.manual_seed(0)
    tok = build("vqvae", tiny_vqvae_config(ch_mult=(1, 2, 2))).eval()  # 8x8 maps of 32 codes
    cfg = TextToImageConfig(**{**dict(words=WORDS, max_words=6, dim=32, n_layer=2, n_head=4, multiple_of=16,
                                      text_dim=16, text_depth=1, text_heads=2), **kw})
    return build("t2i", cfg, tok)


def test_captions_become_left_padded_word_ids_and_unknown_words_are_said():
    assert words_of("Woman farmer: medium-light skin tone") == ["woman", "farmer", "medium", "light", "skin", "tone"]
    vocab = Vocabulary(WORDS)
    ids, unknown = vocab.encode(["red apple", "blue cat face"], length=4)
    assert ids[0].tolist() == [PAD, PAD, vocab.index["red"], vocab.index["apple"]]  # the last word meets the image
    assert ids[1, 1].item() == UNK and unknown == [[], ["blue"]]
    assert vocab.decode(ids) == ["red apple", "<unk> cat face"]
    with pytest.raises(ValueError, match="has 5 words; this model reads at most 4"):
        vocab.encode(["a b c d e"], length=4)
    with pytest.raises(ValueError, match="has no words"):
        vocab.encode([" : "], length=4)


def test_the_prefix_mask_hides_padding_keeps_order_and_lets_each_position_see_itself():
    key_mask = torch.tensor([[False, False, True], [True, True, True]])  # caption 0 has one word, caption 1 three
    mask = prefix_attention(key_mask, n_new=5, n_past=0)[:, 0]  # 3 caption positions + 2 image tokens
    assert mask.shape == (2, 5, 5)
    assert not mask[0, 2:, :2].any()  # no later position reads caption 0's padding
    assert mask[0].diagonal().all() and mask[1].diagonal().all()  # a padding query still sees itself (no NaN)
    assert torch.equal(mask[1], torch.ones(5, 5, dtype=torch.bool).tril())  # caption 1: plain causal
    step = prefix_attention(key_mask, n_new=1, n_past=5)[:, 0]  # a cached step: one query, six keys
    assert step[0, 0].tolist() == [False, False, True, True, True, True]


def test_padding_does_not_change_what_the_image_tokens_see():
    model = tiny_t2i().eval()
    ids = model.encode_prompts(["red apple"])
    tokens = torch.randint(0, 32, (1, 63))
    before = model(tokens, ids)
    with torch.no_grad():
        model.text_encoder.words.weight[PAD] += 5.0  # what the padding embeds cannot matter: it is masked out
    assert torch.allclose(model(tokens, ids), before, atol=1e-5)
    assert before.shape == (1, 64, 32)  # the caption's last position predicts the first image token


def test_cached_and_uncached_sampling_agree_and_guidance_reads_the_null_caption():
    model = tiny_t2i()
    prompts = ["red apple", "cat face"]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    cached = model.generate(prompts=prompts, generator=g(), guidance=3.0)
    uncached = model.generate(prompts=prompts, generator=g(), guidance=3.0, use_cache=False)
    assert cached.shape == (2, 8, 8) and torch.equal(cached, uncached)
    trace = []
    model.generate(prompts, generator=g(), guidance=3.0, trace=trace, top_k=1)
    ids = model.encode_prompts(prompts)
    null = torch.full_like(ids, NULL)
    first = model(torch.zeros(4, 0, dtype=torch.long), torch.cat([ids, null]))[:, -1]
    mixed = first[2:] + 3.0 * (first[:2] - first[2:])
    assert torch.allclose(trace[0]["logits"], mixed, atol=1e-5)


def test_caption_dropout_trains_the_null_caption_and_is_off_in_eval():
    model = tiny_t2i(caption_dropout=0.5)
    none = torch.zeros(4000, dtype=torch.bool)
    assert 0.45 < model.train().caption_embedder.drop(none).float().mean() < 0.55
    assert not model.eval().caption_embedder.drop(none).any()
    ids = model.encode_prompts(["red apple"] * 2)
    model.train()
    model(torch.zeros(2, 10, dtype=torch.long), ids)[:, -1].sum().backward()
    assert model.caption_embedder.null.grad is not None  # dropped captions read the (learned) null caption


def test_prompts_are_checked_and_an_unknown_word_is_said():
    model = tiny_t2i()
    with pytest.warns(UserWarning, match="1 word.*never saw.*blue"):
        model.generate(prompts=["blue apple"], generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="reads at most 6"):
        model.generate(prompts=["one two three four five six seven"])
    with pytest.raises(ValueError, match="conditioned on captions"):
        model.generate(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="the null caption is guidance's"):
        model.generate(torch.full((1, 6), NULL))
    with pytest.raises(ValueError, match="give the captions once"):
        model.generate()


def test_features_from_another_encoder_plug_into_the_same_slot():
    model = tiny_t2i().eval()
    features, mask = torch.randn(2, 6, 16), torch.tensor([[False] * 4 + [True] * 2, [True] * 6])
    logits = model(torch.randint(0, 32, (2, 5)), Captions(features, mask))
    assert logits.shape == (2, 6, 32)
    with pytest.raises(ValueError, match="text_dim must be the encoder's width"):
        model(torch.randint(0, 32, (2, 5)), Captions(torch.randn(2, 6, 8), mask))
    # the text encoder's own features through the slot: the very samples the word ids give, guidance included
    ids = model.encode_prompts(["red apple", "cat face"])
    with torch.no_grad():
        own = Captions(model.text_encoder(ids), ids != PAD)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(model.generate(own, generator=g(), guidance=3.0),
                       model.generate(ids, generator=g(), guidance=3.0))
    with pytest.raises(ValueError, match="no visible token"):
        model.generate(Captions(features, torch.zeros(2, 6, dtype=torch.bool)))


def test_a_t2i_run_trains_on_the_emoji_captions_and_its_loss_falls(tmp_path):
    tok = tiny_train_config(tmp_path, max_steps=4, eval_every=100, ckpt_every=100)
    train(tok, progress=False)
    model = TextToImageConfig(dim=32, n_layer=1, n_head=4, multiple_of=16, text_dim=16, text_depth=1, text_heads=2)
    assert len(model.words) > 1000 and model.max_words == 13  # the emoji training names, the longest name
    cfg = TrainConfig(name="t2i", model="t2i", tokenizer=str(tok.run_dir), out_dir=str(tmp_path), batch_size=16,
                      lr=3e-3, warmup_steps=2, max_steps=30, eval_every=30, ckpt_every=30, log_every=1,
                      eval_batches=1, model_config=model, **QUICK)
    out = train(cfg, progress=False)
    log = [r for r in map(__import__("json").loads, (cfg.run_dir / "metrics.jsonl").read_text().splitlines())
           if "loss" in r]
    assert sum(r["loss"] for r in log[-5:]) < sum(r["loss"] for r in log[:5])
    loaded = minivar.load(cfg.run_dir)
    assert loaded.cfg.words == model.words  # the vocabulary travels with the checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known words: no warning
        maps = loaded.generate(prompts=["red apple"], generator=torch.Generator().manual_seed(0))
    assert maps.shape == (1, 16, 16) and out["step"] == 30


def test_the_command_line_draws_one_column_per_prompt_and_says_unknown_words(tmp_path, capsys):
    from minivar.__main__ import main
    model = tiny_t2i()
    run = tmp_path / "t2i"
    from minivar.checkpoint import save_checkpoint
    tok_run = tmp_path / "tok"
    save_checkpoint({"model": model.tokenizer.state_dict(), "config": {"model": "vqvae", "model_config":
                     model.tokenizer.cfg.__dict__}}, tok_run / "ckpt.pt")
    save_checkpoint({"model": model.state_dict(), "config": {"model": "t2i", "model_config": model.cfg.__dict__,
                     "tokenizer": str(tok_run)}}, run / "ckpt.pt")
    out = tmp_path / "grid.png"
    assert main(["sample", str(run), "--prompt", "red apple", "--prompt", "zorgle face", "--n", "4",
                 "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert "one column per prompt: ['red apple', 'zorgle face']" in said.out and out.exists()
    assert "note: 1 word(s) this model never saw in a training caption, read as <unk>: zorgle" in said.err
    assert main(["sample", str(run), "--classes", "0", "--n", "2"]) == 2
    assert "draws for captions, not classes" in capsys.readouterr().err
