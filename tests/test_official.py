"""minivar reproduces the official models from their weights (golden fixtures in tests/fixtures/README.md)."""

from pathlib import Path

import pytest
import torch

from minivar.official import load_llamagen_gpt, load_llamagen_vq, load_maskgit_vq, load_rar

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def llamagen():
    golden = torch.load(FIXTURES / "llamagen_vq_tiny.pt", weights_only=True)
    args = {k: v for k, v in golden["model_args"].items() if k not in ("in_channels", "out_channels")}
    return golden, load_llamagen_vq(golden["state_dict"], image_size=32, **args)


def test_llamagen_vq_tokens_equal_the_official_indices(llamagen):
    golden, vq = llamagen
    tokens = vq.encode(golden["x"])  # (B, h, w); the official code returns them flattened (b, h, w)-major
    assert tokens.shape == (2, 16, 16)
    assert torch.equal(tokens.flatten(), golden["indices"])


def test_llamagen_vq_intermediates_and_reconstructions(llamagen):
    golden, vq = llamagen
    with torch.no_grad():
        h = vq.encoder(golden["x"])
        torch.testing.assert_close(h, golden["encoder_out"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(vq.quant_conv(h), golden["pre_quant"], atol=1e-5, rtol=1e-4)
        z_q, _, _, _ = vq.quantize(golden["x"])
        torch.testing.assert_close(z_q, golden["quant"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(vq.decode_codes(golden["quant"]), golden["dec"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(vq.decode(vq.encode(golden["x"])), golden["dec_code"], atol=1e-5, rtol=1e-4)


def test_llamagen_vq_training_losses(llamagen):
    golden, vq = llamagen
    q = vq.quantizer.train()
    q.entropy_weight = 1.0  # the fixture recorded the entropy term with LlamaGen's entropy_loss_ratio = 1
    with torch.no_grad():
        _, _, loss, stats = q(golden["pre_quant"])
    q.eval()
    q.entropy_weight = 0.0
    torch.testing.assert_close(stats["codebook_loss"], golden["train_vq_loss"])
    torch.testing.assert_close(stats["commitment_loss"], golden["train_commit_loss"])
    torch.testing.assert_close(stats["entropy_loss"], golden["train_entropy_loss_ratio1"], atol=1e-4, rtol=1e-4)
    # usage: LlamaGen's zero-filled window also counts code 0 before it is seen; minivar's does not
    official_extra = int(0 not in golden["indices"])
    assert stats["window_usage"] * 64 == pytest.approx(golden["train_codebook_usage"] * 64 - official_extra)


def test_wrapped_checkpoints_and_mismatched_args(llamagen):
    golden, _ = llamagen
    args = {k: v for k, v in golden["model_args"].items() if k not in ("in_channels", "out_channels")}
    vq = load_llamagen_vq({"model": golden["state_dict"]}, image_size=32, **args)
    assert torch.equal(vq.encode(golden["x"]).flatten(), golden["indices"])
    with pytest.raises(ValueError, match="does not fit these ModelArgs"):
        load_llamagen_vq(golden["state_dict"], image_size=32, **{**args, "codebook_size": 128})
    with pytest.raises(ValueError, match="unknown LlamaGen ModelArgs"):
        load_llamagen_vq(golden["state_dict"], codebook_dim=8)


# ------------------------------------------------------------------------------- LlamaGen class-to-image GPT

@pytest.fixture(scope="module")
def llamagen_gpt():
    return torch.load(FIXTURES / "llamagen_gpt_tiny.pt", weights_only=True)


@pytest.mark.parametrize("variant", ["mha", "gqa"])
def test_llamagen_gpt_logits_equal_the_official_training_forward(llamagen_gpt, variant):
    golden = llamagen_gpt if variant == "mha" else {**llamagen_gpt, **llamagen_gpt["gqa"]}
    gpt = load_llamagen_gpt(golden["state_dict"], **golden["model_args"])
    with torch.no_grad():
        logits = gpt(golden["idx"], golden["cond_idx"])  # (B, N, vocab): output i predicts token i
        torch.testing.assert_close(logits, golden["logits"], atol=1e-5, rtol=1e-4)
        null = torch.full_like(golden["cond_idx"], gpt.null_class)
        torch.testing.assert_close(gpt(golden["idx"], null), golden["logits_null"], atol=1e-5, rtol=1e-4)
    loss, _ = gpt.loss((golden["targets"], golden["cond_idx"]))
    assert loss.item() == pytest.approx(golden["loss"].item() if torch.is_tensor(golden["loss"]) else golden["loss"],
                                        abs=1e-5)


def test_llamagen_gpt_rope_is_the_official_table(llamagen_gpt):
    gpt = load_llamagen_gpt(llamagen_gpt["state_dict"], **llamagen_gpt["model_args"])
    torch.testing.assert_close(gpt.rope, llamagen_gpt["freqs_cis"].float())
    assert gpt.rope[0].abs().sum() == 0  # the quirk: the class token's rotation is all zeros


@pytest.mark.parametrize("key", ["greedy_cfg1", "greedy_cfg2", "sample_cfg1", "sample_cfg2", "sample_cfg1_temp0.1",
                                 "sample_cfg2_temp0.1", "sample_cfg2_topk8"])
def test_llamagen_gpt_generation_equals_the_official_generate(llamagen_gpt, key):
    """Same tokens as the official KV-cache generate(), under the same global seed (sampling draws one
    torch.multinomial per step, as the official code does)."""
    gpt = load_llamagen_gpt(llamagen_gpt["state_dict"], **llamagen_gpt["model_args"])
    cfg = 2.0 if "cfg2" in key else 1.0
    temperature = 0.0 if key.startswith("greedy") else (0.1 if "temp0.1" in key else 1.0)
    torch.manual_seed(0)
    maps = gpt.generate(llamagen_gpt["cond_idx"], guidance=cfg, temperature=temperature,
                        top_k=8 if "topk8" in key else 0)
    assert torch.equal(maps.flatten(1), llamagen_gpt["generate"][key].long())


def test_llamagen_gpt_loader_names_a_wrong_config(llamagen_gpt):
    with pytest.raises(ValueError, match="check dim"):
        load_llamagen_gpt(llamagen_gpt["state_dict"], **{**llamagen_gpt["model_args"], "n_layer": 3})
    with pytest.raises(ValueError, match="unknown LlamaGen ModelArgs"):
        load_llamagen_gpt(llamagen_gpt["state_dict"], **llamagen_gpt["model_args"], depth=2)


# ----------------------------------------------------------------------------- RAR and its MaskGIT VQGAN

@pytest.fixture(scope="module")
def rar():
    return torch.load(FIXTURES / "rar_tiny.pt", weights_only=True)


@pytest.mark.parametrize("which", ["first", "second"])
def test_rar_logits_equal_the_release_forward_in_any_order(rar, which):
    """The release's forward_fn(tokens, preprocess_condition(labels), orders) on its first N outputs; the fixtures
    hold a raster and two random orders (first) and another width, depth, heads, MLP ratio and grid (second)."""
    f = rar if which == "first" else rar["second"]
    model = load_rar(f["state_dict"], codebook_size=f["codebook_size"], **f["config"])
    N = f["tokens"].shape[1]
    torch.testing.assert_close(model(f["tokens"], f["labels"], f["orders"]), f["logits"][:, :N], rtol=1e-5, atol=1e-5)
    if which == "first":
        null = torch.full_like(f["labels"], model.null_class)
        torch.testing.assert_close(model(f["tokens"], null, f["orders"]), f["logits_null"][:, :N], rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("key", ["g1", "g3_pow0", "g3_pow2.75", "g2_t0.5"])
@pytest.mark.parametrize("cache", [True, False])
def test_rar_generation_equals_the_release_generate(rar, key, cache):
    """Same tokens as the release's generate() (with and without its KV cache) under the same global seed. The
    release first draws len(labels) uniforms for its label dropout (at probability 0), so the test does too."""
    model = load_rar(rar["state_dict"], codebook_size=rar["codebook_size"], **rar["config"])
    assert (model.cfg.guidance, model.cfg.guidance_power) == (16.0, 2.75)  # RAR-B's sampling defaults
    kw = {"g1": dict(guidance=1.0, guidance_power=0.0), "g3_pow0": dict(guidance=3.0, guidance_power=0.0),
          "g3_pow2.75": dict(guidance=3.0, guidance_power=2.75),
          "g2_t0.5": dict(guidance=2.0, guidance_power=1.0, temperature=0.5)}[key]
    torch.manual_seed(0)
    torch.rand(len(rar["labels"]))
    maps = model.generate(rar["labels"], use_cache=cache, **kw)
    assert torch.equal(maps.flatten(1), rar["generate"][f"{key}_{'cache' if cache else 'nocache'}"])


def test_rar_loader_names_a_wrong_config(rar):
    with pytest.raises(ValueError, match="check hidden_size"):
        load_rar(rar["state_dict"], codebook_size=64, **{**rar["config"], "num_hidden_layers": 3})
    with pytest.raises(ValueError, match="unknown RAR config"):
        load_rar(rar["state_dict"], codebook_size=64, **rar["config"], depth=2)
    with pytest.raises(ValueError, match="check hidden_size"):  # a shorter sequence must not load silently
        load_rar(rar["state_dict"], codebook_size=64, **{**rar["config"], "image_seq_len": 9})
    with pytest.raises(ValueError, match="square"):
        load_rar(rar["state_dict"], codebook_size=64, **{**rar["config"], "image_seq_len": 15})


@pytest.fixture(scope="module")
def maskgit():
    return torch.load(FIXTURES / "maskgit_vq_tiny.pt", weights_only=True)


def test_maskgit_vq_encode_and_decode_equal_the_release(maskgit):
    tok = load_maskgit_vq(maskgit["state_dict"], image_size=32, **maskgit["config"])
    images = maskgit["images01"] * 2 - 1  # minivar's frame; the release read images01
    tokens = tok.encode(images)
    assert tokens.shape == (4, 16, 16)
    assert torch.equal(tokens.flatten(1), maskgit["codes"])
    torch.testing.assert_close(tok.encoder(maskgit["images01"]), maskgit["encoder_out"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tok.decode_raw(tokens), maskgit["decoder_raw"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tok.decode(tokens), maskgit["decoded01"] * 2 - 1, rtol=1e-5, atol=1e-5)
    assert tok.code_format()["codebook_size"] == 48


def test_maskgit_vq_loader_names_a_wrong_config(maskgit):
    with pytest.raises(ValueError, match="check channel_mult"):
        load_maskgit_vq(maskgit["state_dict"], image_size=32, **{**maskgit["config"], "num_res_blocks": 1})
    with pytest.raises(ValueError, match="must equal"):
        load_maskgit_vq(maskgit["state_dict"], image_size=32, **{**maskgit["config"], "z_channels": 8})


def test_a_released_rar_samples_images_through_its_tokenizer(rar):
    """The pieces fit together as a GPU learner will use them: RAR bound to a MaskGIT VQ whose codebook and grid
    are its own, generate -> decode -> images in [-1, 1]."""
    from minivar.maskgit_vq import MaskGITVQ, MaskGITVQConfig
    tok = MaskGITVQ(MaskGITVQConfig(image_size=16, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, code_dim=8,
                                    codebook_size=64)).eval()
    model = load_rar(rar["state_dict"], tokenizer=tok, codebook_size=64, **rar["config"])
    images = tok.decode(model.generate(torch.tensor([0, 9]), guidance=2.0))
    assert images.shape == (2, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
