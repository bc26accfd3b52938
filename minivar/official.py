"""Load official checkpoints into minivar's readable modules.

    vq = load_llamagen_vq(torch.load("vq_ds16_c2i.pt", weights_only=True)["model"])   # LlamaGen VQ-16
    tokens = vq.encode(images)        # (B, 16, 16) for 256x256 images, equal to the official indices
    images = vq.decode(tokens)        # equal to the official decode_code

Each loader takes the official state dict (or the checkpoint dict that wraps it) and the official
constructor's keyword arguments, renames the weights to minivar's module names, and loads them strictly:
a missing or unexpected weight is an error that names it. Golden fixtures in tests/fixtures/ (made by
running the official modules at tiny sizes with random weights) prove the outputs are the same.
"""

import re

from .autoencoder import VQVAE, VQVAEConfig

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


__all__ = ["load_llamagen_vq", "unwrap_state_dict"]
