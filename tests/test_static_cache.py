"""Every generator samples through a static KV cache (one buffer for the whole sequence, written in place): for a
fixed seed, in float32 on the CPU, it gives exactly the tokens (FlowAR: latents) of the growing cache it replaced."""

import warnings

import pytest
import torch

from minivar import pretrained, transformer


def growing(self, capacity: int = 0, fixed_address: bool = False):  # KVCache as it was: every step concatenates
    self.capacity, self.n, self.k, self.v, self.fixed_address = 0, 0, None, None, False  # the whole past


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


@pytest.fixture
def traced_only(monkeypatch):
    """torch.compile with the "eager" backend: dynamo traces the step (fixed shapes, no graph break) without
    generating code, so a test checks the compiled path in a second, not the half minute inductor takes. A second
    trace for the same batch (a guard that fails at every step: strides, offsets) is an error, and so is falling back
    to the uncompiled step: a step that silently recompiled every time would pass every equality."""
    from minivar import sampling
    monkeypatch.setattr(sampling.CompiledStep, "backend", "eager")
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True), warnings.catch_warnings():
        warnings.filterwarnings("error", message="cannot compile")
        yield
    torch._dynamo.reset()


def test_the_fixed_shape_step_gives_the_cached_paths_logits_at_every_position(traced_only):
    model = pretrained.load("emoji-raster")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.cfg.codebook_size, (3, model.cfg.seq_len), generator=g)
    labels = torch.tensor([0, 5, model.null_class])
    with torch.no_grad():
        teacher = model(tokens[:, :-1], labels)  # (3, N, V): position i predicts token i
        for step in (model.decode_step, model.compiled_step()):
            caches = [transformer.KVCache(1 + model.cfg.seq_len) for _ in model.layers]
            first = model(tokens[:, :0], labels, caches)[:, -1]  # the class token: the first token's logits
            torch.testing.assert_close(first, teacher[:, 0], atol=1e-4, rtol=0)
            for i in range(model.cfg.seq_len - 1):
                logits = step(tokens[:, i:i + 1], torch.tensor(1 + i), caches)
                torch.testing.assert_close(logits, teacher[:, i + 1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["emoji-raster", "emoji-t2i"])
def test_compiled_sampling_draws_the_eager_samples(name, traced_only):
    model = pretrained.load(name)
    condition = dict(prompts=["red apple", "smiling face"]) if name == "emoji-t2i" else {"labels": torch.tensor([1, 7])}

    def draw(**kw):
        return model.generate(**condition, generator=torch.Generator().manual_seed(0), **kw)

    assert torch.equal(draw(compile=True), draw())


def test_the_compiled_step_keeps_its_caches_at_fixed_addresses(traced_only):
    """One set of caches per batch size, kept with the compiled step and emptied for each sample: the second call
    reuses the first's buffers (a CUDA graph reads them at their address) without compiling again, and a leftover of
    the first sample changes nothing."""
    model = pretrained.load("emoji-raster")
    model.__dict__.pop("_compiled_steps", None)
    labels = torch.tensor([1, 7])
    first = model.generate(labels, generator=torch.Generator().manual_seed(0), compile=True)
    kept = model.compiled_step().kept
    addresses = [c.k.data_ptr() for c in kept[4]]  # guided: 2 x 2 rows
    other = model.generate(labels, generator=torch.Generator().manual_seed(1), compile=True)
    again = model.generate(labels, generator=torch.Generator().manual_seed(0), compile=True)
    assert torch.equal(again, first) and not torch.equal(other, first)
    assert [c.k.data_ptr() for c in kept[4]] == addresses and list(kept) == [4]


def test_compiling_falls_back_with_one_warning_and_the_same_samples(monkeypatch):
    model = pretrained.load("emoji-raster")
    model.__dict__.pop("_compiled_steps", None)

    def broken(fn, **kw):
        def fails(*args):
            raise RuntimeError("no C++ compiler found")
        return fails

    monkeypatch.setattr(torch, "compile", broken)
    labels = torch.tensor([2, 3])
    with pytest.warns(UserWarning, match="cannot compile the sampling step here .*no C\\+\\+ compiler"):
        compiled = model.generate(labels, generator=torch.Generator().manual_seed(0), compile=True)
    assert torch.equal(compiled, model.generate(labels, generator=torch.Generator().manual_seed(0)))


def test_rars_compiled_step_follows_any_order_and_a_given_start(traced_only):
    """RAR's fixed-shape step reads each slot's position, target and step embedding by index: in a random order, with
    the first tokens given, every step's logits agree with the cached path's and the samples are the same."""
    from minivar.rar import sample_orders
    model = pretrained.load("emoji-rar")
    N = model.cfg.seq_len
    orders = sample_orders(2, N, ratio=1.0, generator=torch.Generator().manual_seed(3))
    given = torch.full((2, N), -1)
    given[:, orders[0, :5]] = 7  # five tokens fixed at the first order's first positions
    runs = {}
    for compile in (False, True):
        trace = []
        maps = model.generate(torch.tensor([1, 6]), orders=orders, given=given, compile=compile, trace=trace,
                              generator=torch.Generator().manual_seed(0))
        runs[compile] = maps, trace
    assert torch.equal(runs[True][0], runs[False][0])
    for eager, compiled in zip(runs[False][1], runs[True][1]):
        torch.testing.assert_close(compiled["logits"], eager["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name, smaller", [("emoji-var", dict(depth=1)),
                                           ("emoji-flowar", dict(encoder_depth=1, decoder_depth=1, head_depth=1))])
def test_scale_wise_generators_compile_one_graph_per_scale_and_sample_the_same(name, smaller, monkeypatch):
    """VAR and FlowAR compile each scale's pass (FlowAR also its velocity) once per shape: K - 1 graphs for VAR (the
    first scale, which allocates the caches, runs eagerly), 2K - 1 for FlowAR; a second call compiles nothing, the
    logits agree with the eager ones within 1e-4 at every scale and the samples are the eager samples. One-layer
    copies on the pretrained tokenizer keep dynamo's tracing short (random weights sample as well as any)."""
    import dataclasses

    from minivar import sampling
    graphs = []

    def counting(gm, example_inputs):  # dynamo's "eager" backend, counted
        graphs.append(gm)
        return gm.forward

    monkeypatch.setattr(sampling.CompiledStep, "backend", staticmethod(counting))
    trained = pretrained.load(name)
    torch.manual_seed(0)
    model = type(trained)(dataclasses.replace(trained.cfg, **smaller)).bind(trained.tokenizer).eval()
    K = len(model.cfg.scales) if name == "emoji-var" else len(model.scales)
    kw = dict(sample_steps=4) if name == "emoji-flowar" else {}
    torch._dynamo.reset()
    runs = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="cannot compile")
        for compile in (False, True, True):
            trace = []
            out = model.generate(torch.tensor([0, 5]), generator=torch.Generator().manual_seed(0), trace=trace,
                                 compile=compile, **kw)
            runs.setdefault(compile, []).append((out, trace))
            if compile:
                assert len(graphs) == (K - 1 if name == "emoji-var" else 2 * K - 1)
    torch._dynamo.reset()
    (eager, eager_trace), = runs[False]
    for out, trace in runs[True]:
        if name == "emoji-var":
            assert all(torch.equal(a, b) for a, b in zip(out, eager))
            for e, c in zip(eager_trace, trace):
                torch.testing.assert_close(c["logits"], e["logits"], atol=1e-4, rtol=0)
        else:
            torch.testing.assert_close(out, eager, atol=1e-5, rtol=0)


def test_a_model_cast_after_compiling_gets_a_new_step_and_new_caches(monkeypatch):
    """The compiled step and its kept caches belong to the model's device and dtype: after .double() the next
    compiled sampling makes new ones (float64 caches), instead of writing float64 keys into float32 buffers."""
    from minivar import sampling
    monkeypatch.setattr(sampling.CompiledStep, "backend", "eager")
    torch._dynamo.reset()
    model = pretrained.load("emoji-raster")
    labels = torch.tensor([1, 2])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="cannot compile")
        model.generate(labels, compile=True)
        first = model.compiled_step()
        model.double()
        maps = model.generate(labels, compile=True, generator=torch.Generator().manual_seed(0))
    step = model.compiled_step()
    assert step is not first and step.made_for == (torch.device("cpu"), torch.float64)
    assert all(c.k.dtype == torch.float64 for c in step.kept[4])
    assert torch.equal(maps, model.generate(labels, generator=torch.Generator().manual_seed(0)))
    torch._dynamo.reset()
