"""Every generator samples through a static KV cache (one buffer for the whole sequence, written in place): for a
fixed seed, in float32 on the CPU, it gives exactly the tokens (FlowAR: latents) of the growing cache it replaced."""

import pytest
import torch

from minivar import pretrained, transformer


def growing(self, capacity: int = 0):  # KVCache as it was: every step concatenates the whole past
    self.capacity, self.n, self.k, self.v = 0, 0, None, None


@pytest.mark.parametrize("name", ["emoji-raster", "emoji-var", "emoji-flowar", "emoji-rar"])
def test_the_static_cache_samples_exactly_what_the_growing_cache_sampled(name, monkeypatch):
    model = pretrained.load(name)
    labels = torch.tensor([0, 4, 8])
    kw = dict(sample_steps=4) if name == "emoji-flowar" else {}

    def draw():
        out = model.generate(labels, generator=torch.Generator().manual_seed(0), **kw)
        return torch.cat([m.flatten(1) for m in out], 1) if isinstance(out, list) else out

    static = draw()
    monkeypatch.setattr(transformer.KVCache, "__init__", growing)
    assert torch.equal(static, draw())


def test_the_steady_allocator_is_set_on_linux_and_left_alone_when_asked(monkeypatch):
    import sys

    import minivar
    monkeypatch.setenv("MINIVAR_MALLOC", "0")
    assert minivar.steady_allocator() is False
    monkeypatch.delenv("MINIVAR_MALLOC")
    assert minivar.steady_allocator() is sys.platform.startswith("linux")
