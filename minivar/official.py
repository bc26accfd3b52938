"""Load official checkpoints into minivar's readable modules.

    vq = load_llamagen_vq(torch.load("vq_ds16_c2i.pt", weights_only=True)["model"])   # LlamaGen VQ-16
    tokens = vq.encode(images)        # (B, 16, 16) for 256x256 images, equal to the official indices
    images = vq.decode(tokens)        # equal to the official decode_code

    gpt = load_llamagen_gpt(torch.load("c2i_B_256.pt", weights_only=True)["model"], dim=768, n_layer=12,
                            n_head=12, vocab_size=16384, block_size=256, num_classes=1000)   # LlamaGen GPT-B
    maps = gpt.generate(labels, cfg_scale=4.0, top_k=2000).view(-1, 16, 16)   # decode with the VQ above

Each loader takes the official state dict (or the checkpoint dict that wraps it) and the official
constructor's keyword arguments, renames the weights to minivar's module names, and loads them strictly:
a missing or unexpected weight is an error that names it. Golden fixtures in tests/fixtures/ (made by
running the official modules at tiny sizes with random weights) prove the outputs are the same.
"""

import math
import re

import torch

from .autoencoder import VQVAE, VQVAEConfig
from .raster_ar import RasterAR, RasterARConfig

# LlamaGen's tokenizer_image/vq_model.py ModelArgs defaults (the released VQ-16 / VQ-8 tokenizers use them,
# with encoder/decoder_ch_mult [1, 1, 2, 2, 4] for VQ-16 and [1, 2, 2, 4] for VQ-8).
LLAMAGEN_VQ_DEFAULTS = dict(codebook_size=16384, codebook_embed_dim=8, codebook_l2_norm=True, codebook_show_usage=True,
                            commit_loss_beta=0.25, entropy_loss_ratio=0.0, encoder_ch_mult=(1, 1, 2, 2, 4),
                            decoder_ch_mult=(1, 1, 2, 2, 4), z_channels=256, dropout_p=0.0)
# Fixed inside LlamaGen's VQModel (not ModelArgs fields): base width 128, 2 ResNet blocks, attention at the
# lowest resolution. `ch` is accepted here for small test models; `image_size` sets minivar's input check.
LLAMAGEN_VQ_FIXED = dict(ch=128, num_res_blocks=2, image_size=256)

LLAMAGEN_VQ_RENAMES = [  # (official pattern, minivar replacement), applied in order
    (r"^(encoder|decoder)\.conv_blocks\.", r"\1.levels."),
    (r"\.nin_shortcut\.", ".skip."),
    (r"\.(downsample|upsample)\.conv\.", ".resample.conv."),
    (r"\.mid\.0\.", ".mid.res1."), (r"\.mid\.1\.", ".mid.attn."), (r"\.mid\.2\.", ".mid.res2."),
    (r"^quantize\.embedding\.", "quantizer.codebook."),
]


def unwrap_state_dict(ckpt: dict) -> dict:
    """Released checkpoints wrap the weights as {"ema"|"model"|"state_dict": ...}; LlamaGen prefers "ema"."""
    for key in ("ema", "model", "state_dict"):
        if key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    return ckpt


def load_llamagen_vq(state_dict: dict, **official_model_args) -> VQVAE:
    """minivar's VQVAE from a LlamaGen VQModel state dict and its ModelArgs keyword arguments."""
    unknown = set(official_model_args) - set(LLAMAGEN_VQ_DEFAULTS) - set(LLAMAGEN_VQ_FIXED) \
        - {"num_res_blocks", "in_channels", "out_channels", "norm_type", "resamp_with_conv"}
    if unknown:
        raise ValueError(f"unknown LlamaGen ModelArgs {sorted(unknown)}; known: {', '.join(LLAMAGEN_VQ_DEFAULTS)}")
    args = {**LLAMAGEN_VQ_DEFAULTS, **LLAMAGEN_VQ_FIXED, **official_model_args}
    if tuple(args["encoder_ch_mult"]) != tuple(args["decoder_ch_mult"]):
        raise ValueError("minivar's VQVAE mirrors the encoder in the decoder: encoder_ch_mult must equal "
                         f"decoder_ch_mult, got {args['encoder_ch_mult']} and {args['decoder_ch_mult']}")
    if args.get("norm_type", "group") != "group" or not args.get("resamp_with_conv", True):
        raise ValueError("only norm_type='group' and resamp_with_conv=True (LlamaGen's defaults) are supported")
    cfg = VQVAEConfig(image_size=args["image_size"], ch=args["ch"], ch_mult=tuple(args["encoder_ch_mult"]),
                      num_res_blocks=args["num_res_blocks"], attn=True, z_channels=args["z_channels"],
                      embed_dim=args["codebook_embed_dim"], codebook_size=args["codebook_size"],
                      beta=args["commit_loss_beta"], l2_norm=args["codebook_l2_norm"],
                      entropy_weight=args["entropy_loss_ratio"], dropout=args["dropout_p"])
    model = VQVAE(cfg)
    renamed = {}
    for name, tensor in unwrap_state_dict(state_dict).items():
        if name == "quantize.codebook_used":  # LlamaGen's usage window, saved as a weight; not a weight here
            continue
        for pattern, repl in LLAMAGEN_VQ_RENAMES:
            name = re.sub(pattern, repl, name)
        renamed[name] = tensor
    hint = "check codebook_size, codebook_embed_dim, z_channels, encoder/decoder_ch_mult (and ch)"
    try:
        missing, unexpected = model.load_state_dict(renamed, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"the state dict does not fit these ModelArgs ({e}); {hint}") from None
    if missing or unexpected:
        raise ValueError(f"the state dict does not fit these ModelArgs: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}; {hint}")
    return model.eval()


# LlamaGen's autoregressive/models/gpt.py ModelArgs defaults that matter for class-conditional models.
LLAMAGEN_GPT_DEFAULTS = dict(dim=4096, n_layer=32, n_head=32, n_kv_head=None, multiple_of=256, ffn_dim_multiplier=None,
                             rope_base=10000, norm_eps=1e-5, initializer_range=0.02, token_dropout_p=0.1,
                             attn_dropout_p=0.0, resid_dropout_p=0.1, ffn_dropout_p=0.1, drop_path_rate=0.0,
                             num_classes=1000, caption_dim=2048, class_dropout_prob=0.1, model_type="c2i",
                             vocab_size=16384, cls_token_num=1, block_size=256, max_batch_size=32, max_seq_len=2048)
# The released c2i models: GPT-B (768 wide, 12 layers, 12 heads), GPT-L (1024, 24, 16), GPT-XL (1280, 36, 20),
# GPT-XXL (1536, 48, 24), all with head size 64.


def load_llamagen_gpt(state_dict: dict, **official_model_args) -> RasterAR:
    """minivar's RasterAR from a LlamaGen class-to-image GPT state dict and its ModelArgs keyword arguments.

    The model keeps LlamaGen's one quirk that changes numbers: the class token's 2-D RoPE rows are zeros, so its
    query and key vanish in every layer (prefix_rope="zeros"). Dropouts are kept as configured (they are off
    in eval mode, which the loader returns).
    """
    unknown = set(official_model_args) - set(LLAMAGEN_GPT_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown LlamaGen ModelArgs {sorted(unknown)}; known: {', '.join(LLAMAGEN_GPT_DEFAULTS)}")
    args = {**LLAMAGEN_GPT_DEFAULTS, **official_model_args}
    if args["model_type"] != "c2i" or args["cls_token_num"] != 1:
        raise ValueError("only class-conditional models (model_type='c2i', cls_token_num=1) are supported, got "
                         f"model_type={args['model_type']!r}, cls_token_num={args['cls_token_num']}")
    grid = math.isqrt(args["block_size"])
    if grid * grid != args["block_size"]:
        raise ValueError(f"block_size must be a square number of tokens (grid x grid), got {args['block_size']}")
    cfg = RasterARConfig(vocab_size=args["vocab_size"], grid=grid, num_classes=args["num_classes"], dim=args["dim"],
                         n_layer=args["n_layer"], n_head=args["n_head"], n_kv_head=args["n_kv_head"] or 0,
                         multiple_of=args["multiple_of"], ffn_dim_multiplier=args["ffn_dim_multiplier"] or 0.0,
                         norm_eps=args["norm_eps"], rope="2d", rope_base=float(args["rope_base"]),
                         prefix_rope="zeros", class_dropout=args["class_dropout_prob"],
                         dropout=args["resid_dropout_p"], token_dropout=args["token_dropout_p"],
                         image_size=grid * 16)  # LlamaGen's VQ-16 tokenizer downsamples 16x
    model = RasterAR(cfg)
    renamed = {}
    for name, tensor in unwrap_state_dict(state_dict).items():
        if name.startswith("freqs_cis") or ".kv_cache." in name or name == "causal_mask":
            continue  # recomputed here, not weights
        renamed[name.replace("cls_embedding.embedding_table.", "class_embedding.")] = tensor
    table = renamed.get("class_embedding.weight")
    if table is not None and table.shape[0] == cfg.num_classes:  # trained without label dropout: no null row
        renamed["class_embedding.weight"] = torch.cat([table, torch.zeros_like(table[:1])])
    hint = "check dim, n_layer, n_head, n_kv_head, vocab_size, num_classes, multiple_of, ffn_dim_multiplier"
    try:
        missing, unexpected = model.load_state_dict(renamed, strict=False)
    except RuntimeError as e:
        raise ValueError(f"the state dict does not fit these ModelArgs ({e}); {hint}") from None
    if missing or unexpected:
        raise ValueError(f"the state dict does not fit these ModelArgs: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}; {hint}")
    return model.eval()


__all__ = ["load_llamagen_vq", "load_llamagen_gpt", "unwrap_state_dict"]
