"""Load official checkpoints into minivar's readable modules.

    vq = load_llamagen_vq(torch.load("vq_ds16_c2i.pt", weights_only=True)["model"])   # LlamaGen VQ-16
    tokens = vq.encode(images)        # (B, 16, 16) for 256x256 images, equal to the official indices
    images = vq.decode(tokens)        # equal to the official decode_code

    gpt = load_llamagen_gpt(torch.load("c2i_B_256.pt", weights_only=True)["model"], dim=768, n_layer=12,
                            n_head=12, vocab_size=16384, block_size=256, num_classes=1000)   # LlamaGen GPT-B
    maps = gpt.generate(labels, guidance=4.0, top_k=2000)     # (B, 16, 16): decode with the VQ above

Guidance: minivar writes every generator's guidance as uncond + s (cond - uncond), s = 1 off. LlamaGen's
`cfg_scale` is that s. VAR's `cfg` is t in (1 + t) cond - t uncond, so its cfg c is minivar's guidance 1 + c
(VAR's demo value cfg=1.5 is guidance=2.5), ramped over the scales the same way.

Each loader takes the official state dict (or the checkpoint dict that wraps it) and the official
constructor's keyword arguments, renames the weights to minivar's module names, and loads them strictly:
a missing or unexpected weight is an error that names it. Golden fixtures in tests/fixtures/ (made by
running the official modules at tiny sizes with random weights) prove the outputs are the same.
"""

import math
import re

import torch

from .autoencoder import VQVAE, VQVAEConfig
from .flowar import FlowAR, FlowARConfig
from .kl_autoencoder import KLAutoencoder, KLAutoencoderConfig
from .maskgit_vq import MaskGITVQ, MaskGITVQConfig
from .msvq import MultiScaleVQVAE, MultiScaleVQVAEConfig
from .rar import RAR, RARConfig
from .raster_ar import RasterAR, RasterARConfig
from .var import VAR, VARConfig

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


def rename_weights(weights: dict, renames: list, skip=frozenset()) -> dict:
    """Official weight names -> minivar's: each (pattern, replacement) applied in order; names in `skip` dropped."""
    renamed = {}
    for name, tensor in weights.items():
        if name in skip:
            continue
        for pattern, repl in renames:
            name = re.sub(pattern, repl, name)
        renamed[name] = tensor
    return renamed


def load_strictly(model, renamed: dict, what: str, hint: str):
    """Load renamed official weights; a missing, unexpected or misshapen weight is an error naming the fix."""
    try:
        missing, unexpected = model.load_state_dict(renamed, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"the state dict does not fit these {what} ({e}); {hint}") from None
    if missing or unexpected:
        raise ValueError(f"the state dict does not fit these {what}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}; {hint}")


def unwrap_state_dict(ckpt: dict) -> dict:
    """Released checkpoints wrap the weights as {"ema"|"model"|"state_dict": ...}; LlamaGen prefers "ema"."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"expected a state dict (a dict of weight name -> tensor, as torch.load(path, "
                         f"weights_only=True) gives it for a released checkpoint), got a {type(ckpt).__name__}")
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
                      code_dim=args["codebook_embed_dim"], codebook_size=args["codebook_size"],
                      beta=args["commit_loss_beta"], l2_norm=args["codebook_l2_norm"],
                      entropy_weight=args["entropy_loss_ratio"], dropout=args["dropout_p"])
    model = VQVAE(cfg)
    # (quantize.codebook_used: LlamaGen's usage window, saved as a weight; not a weight here)
    renamed = rename_weights(unwrap_state_dict(state_dict), LLAMAGEN_VQ_RENAMES, skip={"quantize.codebook_used"})
    load_strictly(model, renamed, "ModelArgs",
                  "check codebook_size, codebook_embed_dim, z_channels, encoder/decoder_ch_mult (and ch)")
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
    cfg = RasterARConfig(codebook_size=args["vocab_size"], grid=grid, num_classes=args["num_classes"], dim=args["dim"],
                         n_layer=args["n_layer"], n_head=args["n_head"], n_kv_head=args["n_kv_head"] or 0,
                         multiple_of=args["multiple_of"], ffn_dim_multiplier=args["ffn_dim_multiplier"] or 0.0,
                         norm_eps=args["norm_eps"], rope="2d", rope_base=float(args["rope_base"]),
                         prefix_rope="zeros", class_dropout=args["class_dropout_prob"],
                         dropout=args["resid_dropout_p"], token_dropout=args["token_dropout_p"])
    model = RasterAR(cfg)
    renamed = {}
    for name, tensor in unwrap_state_dict(state_dict).items():
        if name.startswith("freqs_cis") or ".kv_cache." in name or name == "causal_mask":
            continue  # recomputed here, not weights
        renamed[name.replace("cls_embedding.embedding_table.", "class_embedding.")] = tensor
    table = renamed.get("class_embedding.weight")
    if table is not None and table.shape[0] == cfg.num_classes:  # trained without label dropout: no null row
        renamed["class_embedding.weight"] = torch.cat([table, torch.zeros_like(table[:1])])
    load_strictly(model, renamed, "ModelArgs",
                  "check dim, n_layer, n_head, n_kv_head, vocab_size, num_classes, multiple_of, ffn_dim_multiplier")
    return model.eval()


# VAR's models/vqvae.py VQVAE defaults (vae_ch160v4096z32.pth uses them with ch=160, z_channels=32).
VAR_VQVAE_DEFAULTS = dict(vocab_size=4096, z_channels=32, ch=128, dropout=0.0, beta=0.25, using_znorm=False,
                          quant_conv_ks=3, quant_resi=0.5, share_quant_resi=4, default_qresi_counts=0,
                          v_patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), test_mode=True)
# Hard-coded inside VAR's VQVAE (not constructor arguments); accepted here for small test models.
VAR_VQVAE_FIXED = dict(ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2)


def _sd_vae_name(name: str, n_levels: int) -> str:
    """One weight name of an LDM / Stable-Diffusion-style autoencoder (VAR's VQVAE, MAR's KL-VAE) -> minivar's."""
    name = re.sub(r"^(encoder)\.down\.(\d+)\.", r"\1.levels.\2.", name)
    name = re.sub(r"^decoder\.up\.(\d+)\.", lambda m: f"decoder.levels.{n_levels - 1 - int(m.group(1))}.", name)
    name = re.sub(r"\.block\.(\d+)\.", r".res.\1.", name)
    name = name.replace(".nin_shortcut.", ".skip.").replace(".mid.block_1.", ".mid.res1.")
    name = name.replace(".mid.block_2.", ".mid.res2.").replace(".mid.attn_1.", ".mid.attn.")
    name = re.sub(r"\.(downsample|upsample)\.conv\.", ".resample.conv.", name)
    name = name.replace("quantize.embedding.", "quantizer.codebook.")
    name = re.sub(r"^quantize\.quant_resi\.(?:qresi_ls\.)?(\d+)\.", r"quantizer.phis.\1.conv.", name)
    return name.replace("quantize.quant_resi.qresi.", "quantizer.phis.0.conv.")


def load_var_vqvae(state_dict: dict, **official_kwargs) -> MultiScaleVQVAE:
    """minivar's MultiScaleVQVAE from a VAR VQVAE state dict (e.g. vae_ch160v4096z32.pth) and the official
    constructor's keyword arguments. `encode_scales` / `decode_scales` then equal the official `img_to_idxBl` /
    `idxBl_to_img(..., same_shape=True, last_one=True)`."""
    unknown = set(official_kwargs) - set(VAR_VQVAE_DEFAULTS) - set(VAR_VQVAE_FIXED)
    if unknown:
        raise ValueError(f"unknown VAR VQVAE arguments {sorted(unknown)}; known: {', '.join(VAR_VQVAE_DEFAULTS)}")
    args = {**VAR_VQVAE_DEFAULTS, **VAR_VQVAE_FIXED, **official_kwargs}
    scales = tuple(args["v_patch_nums"])
    ch_mult = tuple(args["ch_mult"])
    n_scales, share = len(scales), args["share_quant_resi"]
    n_phi = (args["default_qresi_counts"] or n_scales) if share == 0 else share
    cfg = MultiScaleVQVAEConfig(image_size=scales[-1] * 2 ** (len(ch_mult) - 1), ch=args["ch"], ch_mult=ch_mult,
                                num_res_blocks=args["num_res_blocks"], attn=True, z_channels=args["z_channels"],
                                code_dim=args["z_channels"], codebook_size=args["vocab_size"], beta=args["beta"],
                                l2_norm=args["using_znorm"], dropout=args["dropout"], scales=scales,
                                phi_ratio=abs(args["quant_resi"]) if abs(args["quant_resi"]) > 1e-6 else 0.0,
                                n_phi=n_phi, quant_kernel=args["quant_conv_ks"])
    model = MultiScaleVQVAE(cfg)
    renamed = {}
    for name, tensor in unwrap_state_dict(state_dict).items():
        if name == "quantize.ema_vocab_hit_SV":  # VAR's running code-usage statistics, not weights
            continue
        new = _sd_vae_name(name, len(ch_mult))
        if ".qkv." in new:  # VAR fuses the attention's q, k, v 1x1 convs: outputs ordered [q | k | v]
            for part, chunk in zip("qkv", tensor.chunk(3, dim=0)):
                renamed[new.replace(".qkv.", f".{part}.")] = chunk
        else:
            renamed[new] = tensor
    load_strictly(model, renamed, "arguments",
                  "check vocab_size, z_channels, ch, share_quant_resi, v_patch_nums (and ch_mult / num_res_blocks)")
    return model.eval()


# VAR's models/var.py VAR defaults; build_vae_var uses depth d, embed_dim 64 d, num_heads d, attn_l2_norm=True.
VAR_DEFAULTS = dict(num_classes=1000, depth=16, embed_dim=1024, num_heads=16, mlp_ratio=4.0, drop_rate=0.0,
                    attn_drop_rate=0.0, drop_path_rate=0.0, norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.1,
                    attn_l2_norm=False, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), flash_if_available=True,
                    fused_if_available=True)
VAR_RENAMES = [(r"^class_emb\.", "class_embedding."),
               (r"^head_nm\.ada_lin\.1\.", "head_ada.linear."), (r"\.ada_lin\.1\.", ".ada_lin.linear."),
               (r"^shared_ada_lin\.1\.", "shared_ada_lin.linear."), (r"\.attn\.scale_mul_1H11$", ".attn.scale_mul")]


def load_var(state_dict: dict, tokenizer=None, **official_kwargs) -> VAR:
    """minivar's VAR from an official VAR state dict (var_d16.pth, ...) and the constructor's keyword arguments
    (without vae_local: the vocabulary and code size are read from the weights). `tokenizer` (load_var_vqvae's)
    is bound for generation and training. `model(labels, teacher_forcing_input)` then equals the official
    `forward(label_B, x_BLCv_wo_first_l)`, and `generate(labels, guidance=1 + cfg, ...)` the official
    `autoregressive_infer_cfg(B, labels, cfg=cfg, ...)` (VAR's cfg c is minivar's guidance 1 + c).

        var = load_var(torch.load("var_d16.pth", weights_only=True), vae, depth=16, embed_dim=1024,
                       num_heads=16, attn_l2_norm=True, drop_path_rate=0.1 * 16 / 24)
        images = vae.decode(var.generate(labels, guidance=2.5, top_k=900, top_p=0.96))   # VAR's demo settings
    """
    unknown = set(official_kwargs) - set(VAR_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown VAR arguments {sorted(unknown)}; known: {', '.join(VAR_DEFAULTS)}")
    args = {**VAR_DEFAULTS, **official_kwargs}
    weights = unwrap_state_dict(state_dict)
    if "head.weight" not in weights or "word_embed.weight" not in weights:
        raise ValueError("not a VAR state dict: head.weight / word_embed.weight missing")
    cfg = VARConfig(codebook_size=weights["head.weight"].shape[0], scales=tuple(args["patch_nums"]),
                    code_dim=weights["word_embed.weight"].shape[1], num_classes=args["num_classes"],
                    depth=args["depth"], dim=args["embed_dim"], n_head=args["num_heads"], mlp_ratio=args["mlp_ratio"],
                    norm_eps=args["norm_eps"], class_dropout=args["cond_drop_rate"], dropout=args["drop_rate"],
                    attn_dropout=args["attn_drop_rate"], drop_path=args["drop_path_rate"],
                    attn_l2_norm=args["attn_l2_norm"], shared_aln=args["shared_aln"])
    model = VAR(cfg)
    renamed = rename_weights(weights, VAR_RENAMES, skip={"lvl_1L", "attn_bias_for_masking"})  # buffers rebuilt here
    load_strictly(model, renamed, "arguments",
                  "check depth, embed_dim, num_heads, num_classes, patch_nums, shared_aln, attn_l2_norm")
    if tokenizer is not None:
        model.bind(tokenizer)
    return model.eval()


# ------------------------------------------------------------------------------------- MAR's KL-VAE, FlowAR

def load_mar_vae(state_dict: dict, embed_dim: int = 16, ch_mult=(1, 1, 2, 2, 4), ch: int = 128,
                 num_res_blocks: int = 2, image_size: int = 256, latent_scale: float = 0.2325) -> KLAutoencoder:
    """minivar's KLAutoencoder from MAR's AutoencoderKL state dict (kl16.ckpt, the tokenizer FlowAR uses) and its
    constructor's arguments (`ch`, `num_res_blocks`, `image_size` are fixed inside MAR's code: accepted here for small
    test models). `encode_moments(images)` then equals the official `encode(images)` posterior's mean and logvar,
    `decode_latents(z)` the official `decode(z)`; codes are latents * latent_scale (FlowAR's 0.2325)."""
    weights = unwrap_state_dict(state_dict)
    n = len(tuple(ch_mult))
    cfg = KLAutoencoderConfig(image_size=image_size, ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks,
                              latent_channels=embed_dim, mid_attn=True, latent_scale=latent_scale,
                              # MAR attends where the encoder's resolution is 16 (its last level for KL-16)
                              encoder_attn=any(re.match(r"encoder\.down\.\d+\.attn\.", k) for k in weights))
    model = KLAutoencoder(cfg)
    renamed = {_sd_vae_name(k, n): v for k, v in weights.items()}
    renamed.update(latent_scale=model.latent_scale, scale_updates=model.scale_updates)  # minivar's, not weights
    load_strictly(model, renamed, "arguments", "check embed_dim, ch_mult (and ch, num_res_blocks)")
    return model.eval()


# FlowAR's models/flowar.py constructor defaults; flowar_small: 768 wide, 6 + 6 blocks, 12 heads, diffloss_d 2,
# diffloss_w 1024; flowar_large: 1024, 8 + 8, 16 heads, cross=True, d 12, w 1024; flowar_huge: 1536, 15 + 15, 16
# heads, cross=True, d 12, w 1536.
FLOWAR_DEFAULTS = dict(img_size=256, vae_stride=16, patch_size=1, encoder_embed_dim=1024, encoder_depth=16,
                       encoder_num_heads=16, decoder_embed_dim=1024, decoder_depth=16, decoder_num_heads=16,
                       mlp_ratio=4.0, norm_layer=None, vae_embed_dim=16, label_drop_prob=0.1, class_num=1000,
                       attn_dropout=0.0, proj_dropout=0.0, buffer_size=0, diffloss_d=3, diffloss_w=1024,
                       scale=(1, 2, 4, 8, 16), cross=False, use_checkpoint=False)
FLOWAR_RENAMES = [(r"^class_emb\.", "class_embedding."), (r"^encoder_pos_embed_learned$", "encoder_pos"),
                  (r"^decoder_pos_embed_learned$", "decoder_pos"), (r"^diffusion_pos_embed_learned$", "head_pos"),
                  (r"_blocks\.(\d+)\.ada_lin\.1\.", r"_blocks.\1.ada_lin.linear."), (r"^flownet\.", "head.")]


def load_flowar(state_dict: dict, tokenizer=None, **official_kwargs) -> FlowAR:
    """minivar's FlowAR from a FlowAR release state dict and the release's FlowAR(...) keyword arguments (as its
    flowar_small / large / huge set them). `condition(latents, labels)` then equals the release's teacher-forced
    encoder + decoder output, `velocity(x_t, t, z)` its `flownet(x_t, t, z)`, and `generate(labels, guidance=cfg,
    steps=num_steps, guidance_high=guidance)` its `sample_tokens(num_steps, guidance, cfg, labels)` (the release's
    cfg is already minivar's guidance; its `guidance` is the interval's upper end). `tokenizer`
    (load_mar_vae's) is bound for generation."""
    unknown = set(official_kwargs) - set(FLOWAR_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown FlowAR arguments {sorted(unknown)}; known: {', '.join(FLOWAR_DEFAULTS)}")
    a = {**FLOWAR_DEFAULTS, **official_kwargs}
    if a["patch_size"] != 1 or a["buffer_size"] != 0 or a["encoder_num_heads"] != a["decoder_num_heads"]:
        raise ValueError("minivar's FlowAR takes patch_size=1, buffer_size=0 and equal encoder/decoder heads (the "
                         "released models' settings)")
    cfg = FlowARConfig(latent_channels=a["vae_embed_dim"], grid=a["img_size"] // a["vae_stride"],
                       scales=tuple(a["scale"]), num_classes=a["class_num"], dim=a["encoder_embed_dim"],
                       encoder_depth=a["encoder_depth"], decoder_dim=a["decoder_embed_dim"],
                       decoder_depth=a["decoder_depth"], n_head=a["encoder_num_heads"], mlp_ratio=a["mlp_ratio"],
                       head="transformer", head_width=a["diffloss_w"], head_depth=a["diffloss_d"],
                       head_cross=a["cross"], class_dropout=a["label_drop_prob"], dropout=a["proj_dropout"],
                       attn_dropout=a["attn_dropout"], rope_frame=16.0)  # the release's frame is always 16
    model = FlowAR(cfg)
    weights = {k: v for k, v in unwrap_state_dict(state_dict).items() if k != "mask" and not k.endswith("rope.freqs")}
    renamed = rename_weights(weights, FLOWAR_RENAMES)
    table = renamed.get("class_embedding.weight")
    if table is not None and table.shape[0] == 1001:  # the release's table: 1000 rows + the null class, always
        renamed["class_embedding.weight"] = torch.cat([table[:cfg.num_classes], table[1000:]])
    load_strictly(model, renamed, "arguments", "check img_size / vae_stride, the widths, depths and heads, "
                                               "vae_embed_dim, class_num, diffloss_d / diffloss_w, scale and cross")
    if tokenizer is not None:
        model.bind(tokenizer)
    return model.eval()


# ----------------------------------------------------------------------------- RAR and its MaskGIT VQGAN

# The release's generator config fields (configs/training/generator/rar.yaml; RAR-B: 768 wide, 24 layers, 16 heads,
# intermediate 3072; RAR-L 1024/24/16/4096; RAR-XL 1280/32/16/5120; RAR-XXL 1408/40/16/6144; all 256 tokens over
# the MaskGIT VQGAN's 1024 codes, 1000 classes).
RAR_DEFAULTS = dict(hidden_size=768, num_hidden_layers=24, num_attention_heads=16, intermediate_size=3072,
                    image_seq_len=256, condition_num_classes=1000, codebook_size=1024, dropout=0.1, attn_drop=0.1,
                    class_label_dropout=0.1, guidance_scale=16.0, guidance_scale_pow=2.75)
RAR_RENAMES = [(r"^pos_embed$", "pos"), (r"^target_aware_pos_embed$", "target_pos"),
               (r"^timesteps_embeddings$", "step_embed"), (r"\.adaLN_modulation\.1\.", ".ada.linear."),
               (r"^adaln_before_head\.ada\.", "head_ada."), (r"^lm_head\.", "head.")]


def load_rar(state_dict: dict, tokenizer=None, **config) -> RAR:
    """minivar's RAR from a release state dict (rar_b.bin ...) and the release's generator config fields
    (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, image_seq_len, condition_num_classes,
    codebook_size (its vq_model's), dropout, attn_drop, class_label_dropout, and the sampling defaults
    guidance_scale, guidance_scale_pow: RAR-B's 16 and 2.75 unless given; a guidance_scale of 0, the release's "no
    guidance", becomes minivar's 1). `model(tokens, labels, orders)` then equals the release's
    `forward_fn(tokens, preprocess_condition(labels), orders=orders)` on its first N outputs, and `generate(labels,
    guidance=g, guidance_power=p, temperature=t)` its `generate(labels, guidance_scale=g, guidance_scale_pow=p,
    randomize_temperature=t)` token for token with the same random draws (the release's guidance_scale is minivar's
    guidance, except that its 0 means "no guidance", minivar's 1). `tokenizer` (load_maskgit_vq's) is bound.

    The release's tables are longer than the sequence (1024 spare positions, 100 spare steps) and its embedding
    table has a row for MaskGIT's mask token between the image tokens and the classes; the loader drops both."""
    unknown = set(config) - set(RAR_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown RAR config fields {sorted(unknown)}; known: {', '.join(RAR_DEFAULTS)}")
    a = {**RAR_DEFAULTS, **config}
    grid = math.isqrt(a["image_seq_len"])
    if grid * grid != a["image_seq_len"]:
        raise ValueError(f"image_seq_len {a['image_seq_len']} is not a square number of tokens")
    D = a["hidden_size"]
    cfg = RARConfig(codebook_size=a["codebook_size"], grid=grid, num_classes=a["condition_num_classes"], dim=D,
                    n_layer=a["num_hidden_layers"], n_head=a["num_attention_heads"],
                    mlp_ratio=a["intermediate_size"] / D,  # the release's ratio: the MLP is int(D * ratio) wide
                    class_dropout=a["class_label_dropout"], dropout=a["dropout"], attn_dropout=a["attn_drop"],
                    guidance=a["guidance_scale"] or 1.0, guidance_power=a["guidance_scale_pow"])
    model = RAR(cfg)
    renamed = rename_weights(unwrap_state_dict(state_dict), RAR_RENAMES)
    N, V = cfg.seq_len, cfg.codebook_size
    # the release's tables: N + 1024 rows of positions (both kinds), N + 100 of steps; target-aware rows are read at
    # 2 + grid position, as the plain ones. Exact sizes only: a shorter image_seq_len would otherwise load silently.
    for name, rows, take in (("pos", N + 1024, slice(0, N + 2)), ("target_pos", N + 1024, slice(2, 2 + N)),
                             ("step_embed", N + 100, slice(0, N + 2))):
        t = renamed.get(name)
        if t is not None and t.ndim == 3 and t.shape[1] == rows:
            renamed[name] = t[:, take]
    table = renamed.get("embeddings.weight")
    if table is not None and table.shape[0] == V + cfg.num_classes + 2:
        renamed["embeddings.weight"] = torch.cat([table[:V], table[V + 1:]])  # drop MaskGIT's mask-token row
    load_strictly(model, renamed, "config fields", "check hidden_size, num_hidden_layers, num_attention_heads, "
                                                   "intermediate_size, image_seq_len, condition_num_classes and "
                                                   "codebook_size")
    if tokenizer is not None:
        model.bind(tokenizer)
    return model.eval()


def load_maskgit_vq(state_dict: dict, channel_mult=(1, 1, 2, 2, 4), hidden_channels: int = 128,
                    num_res_blocks: int = 2, z_channels: int = 256, num_embeddings: int = 1024,
                    embedding_dim: int = 256, image_size: int = 256) -> MaskGITVQ:
    """minivar's MaskGITVQ from the release's MaskGIT VQGAN state dict (maskgit-vqgan-imagenet-f16-256.bin, the
    tokenizer RAR's weights expect; its PretrainedTokenizer fixes the arguments to these defaults). `encode(images
    in [-1, 1])` then equals the release's `encode` on the same images in [0, 1] (as (B, h, w) maps), `decode` its
    `decode` mapped to [-1, 1]."""
    if z_channels != embedding_dim:
        raise ValueError(f"the release quantizes the encoder's output directly: z_channels ({z_channels}) must equal "
                         f"embedding_dim ({embedding_dim})")
    cfg = MaskGITVQConfig(image_size=image_size, ch=hidden_channels, ch_mult=tuple(channel_mult),
                          num_res_blocks=num_res_blocks, code_dim=z_channels, codebook_size=num_embeddings)
    model = MaskGITVQ(cfg)
    n = len(cfg.ch_mult)
    renames = [(r"^encoder\.down\.(\d+)\.block\.", r"encoder.levels.\1."), (r"\.nin_shortcut\.", ".skip."),
               (r"^quantize\.embedding\.", "codebook.")]
    renamed = {}
    for name, t in rename_weights(unwrap_state_dict(state_dict), renames).items():
        m = re.match(r"^decoder\.up\.(\d+)\.(block|upsample_conv)\.?(.*)$", name)
        if m:  # the release indexes the decoder's levels finest first; minivar in the order they run
            level = n - 1 - int(m.group(1))
            name = f"decoder.levels.{level}.{m.group(3)}" if m.group(2) == "block" else \
                f"decoder.upsample.{level}.{m.group(3)}"
        renamed[name] = t
    load_strictly(model, renamed, "arguments", "check channel_mult, hidden_channels, num_res_blocks, z_channels, "
                                               "num_embeddings")
    return model.eval()


__all__ = ["load_llamagen_vq", "load_llamagen_gpt", "load_var_vqvae", "load_var", "load_mar_vae", "load_flowar",
           "load_rar", "load_maskgit_vq", "unwrap_state_dict"]
