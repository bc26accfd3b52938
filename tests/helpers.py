"""Small configurations shared by the tests: real code paths, sizes that run in seconds on a CPU."""

from minivar.autoencoder import VQVAEConfig
from minivar.train import TrainConfig


def tiny_vqvae_config(**kw) -> VQVAEConfig:
    base = dict(image_size=32, ch=8, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, embed_dim=8, codebook_size=32)
    return VQVAEConfig(**{**base, **kw})


def tiny_train_config(tmp_path, **kw) -> TrainConfig:
    base = dict(name="tiny", out_dir=str(tmp_path), batch_size=16, lr=3e-3, warmup_steps=5, max_steps=20,
                eval_every=10, ckpt_every=10, log_every=1, eval_batches=1, model_config=tiny_vqvae_config())
    return TrainConfig(**{**base, **kw})
