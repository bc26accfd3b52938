"""Small configurations shared by the tests: real code paths, sizes that run in seconds on a CPU."""

import torch

from minivar import train as train_module
from minivar.autoencoder import VQVAEConfig
from minivar.train import TrainConfig

# what every tiny run of the tests shares: a fixed subset of 256 images per split (encoded, evaluated and previewed in
# seconds), and no checkpoint by wall time (on a slow machine one would appear mid-run: tests never depend on time)
QUICK = dict(data_limit=256, ckpt_minutes=0.0)


def tiny_vqvae_config(**kw) -> VQVAEConfig:
    base = dict(image_size=32, ch=8, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, code_dim=8, codebook_size=32)
    return VQVAEConfig(**{**base, **kw})


def tiny_train_config(tmp_path, **kw) -> TrainConfig:
    base = dict(name="tiny", out_dir=str(tmp_path), batch_size=16, lr=3e-3, warmup_steps=5, max_steps=20,
                eval_every=10, ckpt_every=10, log_every=1, eval_batches=1, model_config=tiny_vqvae_config(), **QUICK)
    return TrainConfig(**{**base, **kw})


def tiny_raster_config(tmp_path, tokenizer_dir, **kw) -> TrainConfig:
    """A raster generator over the tokens of a tiny tokenizer run (tiny_vqvae_config: 32 codes, 16x16 maps: the
    vocabulary and grid are read from the tokenizer)."""
    from minivar.raster_ar import RasterARConfig
    model = RasterARConfig(num_classes=9, dim=32, n_layer=1, n_head=4, multiple_of=16)
    base = dict(name="tiny-raster", model="raster", tokenizer=str(tokenizer_dir), out_dir=str(tmp_path),
                batch_size=16, lr=3e-3, warmup_steps=5, max_steps=30, eval_every=15, ckpt_every=15, log_every=1,
                eval_batches=1, model_config=model, **QUICK)
    return TrainConfig(**{**base, **kw})


def tiny_generator_runs(root):
    """A tiny tokenizer run and a raster generator run over it, 2 steps each -> (tokenizer config, generator config)."""
    from minivar.train import train
    tok = tiny_train_config(root, max_steps=2, eval_every=100, ckpt_every=100)
    train(tok, progress=False)
    gen = tiny_raster_config(root, tok.run_dir, max_steps=2, eval_every=100)
    train(gen, progress=False)
    return tok, gen


def crash_at_call(monkeypatch, n, exc):
    """Make the n-th training step raise `exc`, as a kill or Ctrl-C would interrupt a real run (monkeypatch.undo()
    puts the real step back)."""
    calls = {"n": 0}
    real = train_module.compute_loss

    def compute_loss(*args):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(*args)

    monkeypatch.setattr(train_module, "compute_loss", compute_loss)


def fit(model, batch, steps: int, lr: float = 3e-3) -> list:
    """Train `model` on one fixed batch for `steps` AdamW steps through its own loss; -> the loss of every step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
