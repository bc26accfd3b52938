"""Logit filters keep exactly the intended support, guidance mixes as LlamaGen, inputs are left alone."""

from dataclasses import FrozenInstanceError, dataclass

import pytest
import torch

from minivar.sampling import (
    GuidanceSchedule,
    SamplingOptions,
    TokenByToken,
    TokenSampling,
    cosine_ramp,
    draw,
    filter_logits,
    guidance_mix,
    linear_ramp,
    raise_if_nonfinite,
    sample,
    top_k_filter,
    top_p_filter,
)


def support(logits):
    return set(torch.nonzero(torch.isfinite(logits[0])).flatten().tolist())


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    assert support(top_k_filter(logits, 2)) == {1, 3}
    assert support(top_k_filter(logits, 0)) == set(range(5))  # 0 = off
    assert support(top_k_filter(logits, 9)) == set(range(5))


@pytest.mark.parametrize("p, kept", [(0.5, {2}), (0.7, {2, 0}), (0.8, {2, 0}), (0.81, {2, 0, 3}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_head_holding_p(p, kept):
    probs = torch.tensor([[0.3, 0.05, 0.5, 0.15]])  # sorted: 2 (0.5), 0 (0.3), 3 (0.15), 1 (0.05)
    assert support(top_p_filter(probs.log(), p)) == kept


def test_top_p_always_keeps_the_most_likely_token():
    assert support(top_p_filter(torch.tensor([[5.0, 0.0, 0.0]]), 1e-6)) == {0}


def test_filters_compose_and_leave_their_input_alone():
    logits = torch.tensor([[0.3, 0.05, 0.5, 0.15]]).log()
    before = logits.clone()
    out = filter_logits(logits, top_k=3, top_p=0.6)
    assert support(out) == {2, 0}
    assert torch.equal(logits, before)


def test_guidance_mix_is_llamagen_formula_and_scale_one_is_conditional():
    cond, uncond = torch.randn(3, 10), torch.randn(3, 10)
    torch.testing.assert_close(guidance_mix(cond, uncond, 3.0), uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(guidance_mix(cond, uncond, 1.0), cond)  # up to rounding of (cond - uncond) + uncond


def test_linear_ramp_is_vars_schedule_in_the_one_convention():
    """VAR's official t_k = cfg * k / (K - 1) with (1 + t) cond - t uncond is guidance s_k = 1 + t_k."""
    assert [linear_ramp(2.5, k, 4) for k in range(4)] == pytest.approx([1.0, 1.5, 2.0, 2.5])
    assert linear_ramp(1.0, 3, 6) == 1.0 and linear_ramp(4.0, 0, 1) == 4.0  # 1 = no guidance; one step: the last
    cond, uncond, cfg = torch.randn(3, 10), torch.randn(3, 10), 1.5
    for k in range(6):
        t = cfg * k / 5
        torch.testing.assert_close(guidance_mix(cond, uncond, linear_ramp(1 + cfg, k, 6)), (1 + t) * cond - t * uncond)


@pytest.mark.parametrize("kw, message", [({"top_k": -3}, "top_k must be a whole number >= 0"),
                                         ({"top_k": 2.5}, "top_k must be a whole number"),
                                         ({"top_p": 1.5}, r"top_p must lie in \(0, 1\]"),
                                         ({"top_p": 0.0}, "top_p must lie in")])
def test_bad_filter_settings_name_the_valid_range(kw, message):
    with pytest.raises(ValueError, match=message):
        sample(torch.randn(2, 10), **kw)


def test_sample_respects_the_filters_and_temperature_zero_is_greedy():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    assert torch.equal(sample(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(sample(logits, top_k=1), logits.argmax(-1))
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample(logits, top_k=5, generator=g) for _ in range(200)])  # (200, 4)
    top5 = logits.topk(5).indices
    for row in range(4):
        assert set(draws[:, row].tolist()) <= set(top5[row].tolist())
    with pytest.raises(ValueError, match="temperature"):
        sample(logits, temperature=-1)


def test_sample_frequencies_follow_the_probabilities():
    probs = torch.tensor([[0.6, 0.3, 0.1]])
    g = torch.Generator().manual_seed(0)
    draws = sample(probs.log().expand(20000, 3), generator=g)
    freq = torch.bincount(draws, minlength=3).float() / 20000
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)


@pytest.mark.parametrize("shape", [(1, 7), (64, 512), (3, 4096)])
def test_draw_is_torch_multinomial_without_its_host_read(shape):
    """The same draws as torch.multinomial(probs, 1) from the same generator state, zero entries included (never
    drawn): the samplers' fixed-seed results, and the official fixtures, do not change with the sync-free draw."""
    for seed in range(20):
        probs = torch.randn(shape, generator=torch.Generator().manual_seed(100 + seed)).mul(3).softmax(-1)
        probs[:, : shape[1] // 3] = 0 if seed % 2 else probs[:, : shape[1] // 3]
        mine = draw(probs, torch.Generator().manual_seed(seed))
        theirs = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).squeeze(-1)
        assert torch.equal(mine, theirs)
        assert (probs.gather(1, mine[:, None]) > 0).all()


def test_a_deferred_finiteness_check_raises_after_the_loop_not_during_it():
    logits = torch.randn(4, 10)
    flag = torch.zeros((), dtype=torch.bool)
    sample(logits, generator=torch.Generator().manual_seed(0), nonfinite=flag)
    raise_if_nonfinite(flag, 1.0)  # all finite: nothing to say
    bad = logits.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        sample(bad)  # without the flag: at once
    out = sample(bad, nonfinite=flag)  # with it: the step goes on, the flag remembers
    assert out.shape == (4,) and bool(flag)
    sample(logits, nonfinite=flag)  # a later good step does not clear it
    with pytest.raises(ValueError, match="temperature 0.5"):
        raise_if_nonfinite(flag, 0.5)


def test_one_guidance_schedule_gives_every_generators_s_per_step():
    ramp, cos, flat = GuidanceSchedule(4.0, "linear"), GuidanceSchedule(3.0, "cosine", 1.0), GuidanceSchedule(2.0)
    assert [ramp.at(k, 4) for k in range(4)] == [linear_ramp(4.0, k, 4) for k in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert [cos.at(t, 16) for t in (0, 8)] == [1.0, pytest.approx(2.0)] and cos.at(8, 16) == cosine_ramp(3.0, 8, 16, 1)
    assert GuidanceSchedule(3.0, "cosine", 0.0).at(0, 16) == 3.0  # power 0: constant, as RAR's release
    assert {flat.at(t, 10) for t in range(10)} == {2.0}
    for shape in ("constant", "linear", "cosine"):  # 0 is the unconditional model at every step, whatever the shape
        assert {GuidanceSchedule(0.0, shape).at(t, 5) for t in range(5)} == {0.0}
        assert not GuidanceSchedule(1.0, shape).guided and GuidanceSchedule(0.0, shape).guided


def test_sampling_options_take_the_config_default_and_are_checked_in_one_place():
    @dataclass
    class Cfg:
        guidance: float = 2.5
        guidance_power: float = 2.75

    @dataclass(frozen=True)
    class FromConfig(TokenByToken):
        guidance_power: float = None

    o = FromConfig().resolved(Cfg())
    assert (o.guidance, o.guidance_power, o.top_k, o.use_cache) == (2.5, 2.75, 0, True)
    assert FromConfig(guidance=4.0).resolved(Cfg()).guidance == 4.0  # given beats the config
    assert o.changed(FromConfig(guidance=2.5, guidance_power=2.75)) == {}
    assert o.schedule == GuidanceSchedule(2.5, "constant", 2.75)
    with pytest.raises(FrozenInstanceError):
        o.guidance = 3.0  # options are values: replace them, do not edit them under a running sampler
    for bad, message in ((dict(guidance=-1.0), "guidance must be a finite number >= 0"),
                         (dict(guidance=float("nan")), "guidance must be"),
                         (dict(guidance_schedule="ramp"), "guidance_schedule must be one of constant, linear, cosine"),
                         (dict(guidance_power=-0.5), "guidance_power must be a number >= 0"),
                         (dict(top_k=-1), "top_k must be a whole number >= 0"),
                         (dict(top_p=0.0), r"top_p must lie in \(0, 1\]"),
                         (dict(temperature=-1.0), "temperature must be a finite number >= 0")):
        with pytest.raises(ValueError, match=message):
            TokenSampling(**{"guidance": 1.0, **bad}).check()
    with pytest.raises(ValueError, match="guidance must be"):
        SamplingOptions().resolved(object())  # no default anywhere: None is not a guidance
    types = TokenByToken.field_types()
    assert types["top_k"][:2] == (int, 0) and types["use_cache"][:2] == (bool, True) and types["top_p"][2]


@pytest.mark.parametrize("name, switch", [("emoji-raster", "compile"), ("emoji-rar", "use_cache"),
                                          ("emoji-flowar", "heun")])
def test_a_switch_takes_true_or_false_not_a_truthy_word(name, switch):
    """"yes", 1 or "false" for a switch would otherwise be read by truthiness ("false" is true)."""
    from minivar import pretrained
    model = pretrained.load(name)
    for value in ("yes", 1, "false"):
        with pytest.raises(ValueError, match=f"{switch} is a switch: True or False"):
            model.generate(torch.tensor([0]), **{switch: value})
