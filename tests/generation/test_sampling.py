import math

import pytest
import torch

from musicgen.generation import SamplingConfig, filter_logits, sample_next

NO_FILTER = dict(top_k=0, top_p=1.0)
INF = float("-inf")


def kept(logits: torch.Tensor) -> list[list[int]]:
    return [torch.isfinite(row).nonzero().flatten().tolist() for row in logits]


def test_defaults():
    cfg = SamplingConfig()
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.greedy) == (0.8, 50, 0.95, False)


@pytest.mark.parametrize(
    "fields, name",
    [
        (dict(temperature=0.05), "temperature=0.05"),
        (dict(temperature=2.5), "temperature=2.5"),
        (dict(top_k=-1), "top_k=-1"),
        (dict(top_k=501), "top_k=501"),
        (dict(top_k=2.5), "top_k=2.5"),
        (dict(top_p=0.0), "top_p=0.0"),
        (dict(top_p=1.5), "top_p=1.5"),
    ],
)
def test_out_of_range_parameters_raise_with_name_and_range(fields, name):
    with pytest.raises(ValueError, match=rf"{name}.*\d"):
        SamplingConfig(**fields)


def test_range_bounds_are_allowed():
    SamplingConfig(temperature=0.1, top_k=0, top_p=0.01)
    SamplingConfig(temperature=2.0, top_k=500, top_p=1.0)


def test_temperature_divides_logits():
    logits = torch.tensor([[1.0, 2.0, -3.0]])
    out = filter_logits(logits, SamplingConfig(temperature=0.5, **NO_FILTER))
    torch.testing.assert_close(out, logits / 0.5)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, -1.0, 5.0, 4.0]])
    out = filter_logits(logits, SamplingConfig(temperature=1.0, top_k=2, top_p=1.0))
    assert kept(out) == [[1, 2], [2, 3]]
    torch.testing.assert_close(out[0, [1, 2]], logits[0, [1, 2]])


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    cfg = lambda p: SamplingConfig(temperature=1.0, top_k=0, top_p=p)  # noqa: E731
    assert kept(filter_logits(logits, cfg(0.4))) == [[1]]  # 0.5 >= 0.4
    assert kept(filter_logits(logits, cfg(0.7))) == [[1, 3]]  # 0.5 + 0.3 >= 0.7
    assert kept(filter_logits(logits, cfg(0.9))) == [[1, 2, 3]]  # 0.95 >= 0.9
    assert kept(filter_logits(logits, cfg(1.0))) == [[0, 1, 2, 3]]


def test_temperature_is_applied_before_top_p():
    # at temperature 1 the top two tokens share the mass and top-p 0.9 keeps both;
    # at temperature 0.1 the first holds > 0.9 of it alone, so only it survives
    logits = torch.tensor([[1.0, 0.7, -5.0]])
    assert kept(filter_logits(logits, SamplingConfig(temperature=1.0, top_k=0, top_p=0.9))) == [[0, 1]]
    assert kept(filter_logits(logits, SamplingConfig(temperature=0.1, top_k=0, top_p=0.9))) == [[0]]


def test_top_p_is_applied_to_the_top_k_survivors():
    # probs 0.4, 0.3, 0.2, 0.1. top-k 2 renormalises to 4/7, 3/7, so top-p 0.5 keeps one token;
    # top-p on the raw distribution would have kept two (0.4 < 0.5)
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    out = filter_logits(logits, SamplingConfig(temperature=1.0, top_k=2, top_p=0.5))
    assert kept(out) == [[0]]


def test_aggressive_settings_keep_exactly_the_most_probable_token():
    torch.manual_seed(0)
    logits = torch.randn(16, 100) * 10
    cfg = SamplingConfig(temperature=0.1, top_k=1, top_p=0.01)
    out = filter_logits(logits, cfg)
    assert kept(out) == [[i] for i in logits.argmax(-1).tolist()]
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert torch.equal(sample_next(logits, cfg, gen), logits.argmax(-1))


def test_ties_survive_together_and_nothing_is_ever_all_masked():
    logits = torch.tensor([[2.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    for cfg in (
        SamplingConfig(temperature=0.1, top_k=1, top_p=1.0),
        SamplingConfig(temperature=0.1, top_k=0, top_p=0.01),
        SamplingConfig(temperature=0.1, top_k=1, top_p=0.01),
    ):
        assert kept(filter_logits(logits, cfg)) == [[0, 1], [0, 1, 2, 3]]


@pytest.mark.parametrize("seed", range(4))
def test_random_settings_always_keep_the_argmax(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(32, 300, generator=g) * torch.rand(32, 1, generator=g) * 50
    for _ in range(10):
        cfg = SamplingConfig(
            temperature=float(0.1 + 1.9 * torch.rand(1, generator=g)),
            top_k=int(torch.randint(0, 501, (1,), generator=g)),
            top_p=float(0.01 + 0.99 * torch.rand(1, generator=g)),
        )
        out = filter_logits(logits, cfg)
        rows = torch.arange(32)
        assert torch.isfinite(out[rows, logits.argmax(-1)]).all()
        assert not torch.isnan(out.softmax(-1)).any()


def test_half_precision_logits_are_filtered_in_float32():
    logits = torch.tensor([[10.0, 9.0, -60000.0]], dtype=torch.float16)
    out = filter_logits(logits, SamplingConfig(temperature=0.1, top_k=0, top_p=1.0))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_greedy_is_argmax():
    logits = torch.tensor([[0.1, 3.0, 2.9], [5.0, -1.0, 4.0]])
    assert sample_next(logits, SamplingConfig(greedy=True)).tolist() == [1, 0]


def test_seeded_sampling_is_reproducible_and_batched():
    torch.manual_seed(0)
    logits = torch.randn(8, 64)
    cfg = SamplingConfig(temperature=1.5, top_k=0, top_p=1.0)
    draw = lambda seed: sample_next(logits, cfg, torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = draw(123), draw(123), draw(7)
    assert a.shape == (8,) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    gen = torch.Generator().manual_seed(123)
    run1 = [sample_next(logits, cfg, gen) for _ in range(3)]
    gen.manual_seed(123)
    run2 = [sample_next(logits, cfg, gen) for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(run1, run2))


def test_samples_follow_the_filtered_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(4000, 4)
    cfg = SamplingConfig(temperature=1.0, top_k=3, top_p=0.75)  # keeps 0.5 and 0.3 -> 5/8, 3/8
    ids = sample_next(logits, cfg, torch.Generator().manual_seed(0))
    counts = torch.bincount(ids, minlength=4).float() / 4000
    assert counts[2] == 0 and counts[3] == 0
    assert math.isclose(counts[0].item(), 5 / 8, abs_tol=0.04)


# --- min-p and the repetition penalty ---------------------------------------------------------------
def test_new_fields_default_to_off_and_constrained_on():
    cfg = SamplingConfig()
    assert (cfg.min_p, cfg.repetition_penalty, cfg.repetition_window, cfg.constrained) == (0.0, 1.0, 64, True)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(min_p=-0.1), r"min_p=-0.1 is out of range: allowed 0.0..1.0"),
        (dict(min_p=1.5), r"min_p=1.5 is out of range: allowed 0.0..1.0"),
        (dict(repetition_penalty=0.9), r"repetition_penalty=0.9 is out of range: allowed 1.0..2.0"),
        (dict(repetition_penalty=2.5), r"repetition_penalty=2.5 is out of range: allowed 1.0..2.0"),
        (dict(repetition_window=0), r"repetition_window=0 is out of range: allowed 1..4096"),
        (dict(repetition_window=8.0), r"repetition_window=8.0 must be an integer in \[1, 4096\]"),
        (dict(constrained="yes"), r"constrained='yes' must be a bool"),
    ],
)
def test_new_fields_are_validated(fields, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**fields)
    SamplingConfig(min_p=0.0, repetition_penalty=1.0, repetition_window=1)
    SamplingConfig(min_p=1.0, repetition_penalty=2.0, repetition_window=4096, constrained=False)


def test_min_p_keeps_tokens_at_least_min_p_times_the_top_probability():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    cfg = lambda m: SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, min_p=m)  # noqa: E731
    assert kept(filter_logits(logits, cfg(0.0))) == [[0, 1, 2, 3]]
    assert kept(filter_logits(logits, cfg(0.09))) == [[0, 1, 2, 3]]  # 0.05 >= 0.045
    assert kept(filter_logits(logits, cfg(0.2))) == [[0, 1, 2]]
    assert kept(filter_logits(logits, cfg(0.7))) == [[0]]
    assert kept(filter_logits(torch.tensor([[1.0, 1.0, 0.0]]), cfg(1.0))) == [[0, 1]]  # ties at the top


def test_min_p_comes_after_temperature():
    # probs 0.5, 0.3, 0.2: at temperature 1 min-p 0.5 keeps 0.3 (>= 0.25); at 0.5 the ratio is 0.36 < 0.5
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    assert kept(filter_logits(logits, SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, min_p=0.5))) == [[0, 1]]
    assert kept(filter_logits(logits, SamplingConfig(temperature=0.5, top_k=0, top_p=1.0, min_p=0.5))) == [[0]]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_recent_tokens():
    logits = torch.tensor([[2.0, -1.0, 3.0, -2.0, 0.5]])
    context = torch.tensor([[0, 1, 0]])
    cfg = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=2.0)
    torch.testing.assert_close(filter_logits(logits, cfg, context), torch.tensor([[1.0, -2.0, 3.0, -2.0, 0.5]]))
    torch.testing.assert_close(filter_logits(logits, cfg), logits)  # no context: nothing to penalise
    windowed = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=2.0, repetition_window=1)
    torch.testing.assert_close(filter_logits(logits, windowed, context), torch.tensor([[1.0, -1.0, 3.0, -2.0, 0.5]]))


def test_repetition_penalty_comes_before_temperature_and_applies_to_greedy():
    logits = torch.tensor([[3.0, 2.0, -1.0]])
    context = torch.tensor([[0]])
    cfg = SamplingConfig(temperature=0.5, top_k=0, top_p=1.0, repetition_penalty=2.0)
    torch.testing.assert_close(filter_logits(logits, cfg, context), torch.tensor([[3.0, 4.0, -2.0]]))
    greedy = SamplingConfig(greedy=True, repetition_penalty=2.0)
    assert sample_next(logits, greedy, context=context).tolist() == [1]
    assert sample_next(logits, SamplingConfig(greedy=True), context=context).tolist() == [0]


def test_defaults_ignore_the_context():
    torch.manual_seed(0)
    logits = torch.randn(8, 64)
    context = torch.randint(0, 64, (8, 100))
    a = sample_next(logits, SamplingConfig(), torch.Generator().manual_seed(5))
    b = sample_next(logits, SamplingConfig(), torch.Generator().manual_seed(5), context=context)
    assert torch.equal(a, b)
    assert torch.equal(filter_logits(logits, SamplingConfig()), filter_logits(logits, SamplingConfig(), context))


def test_generate_feeds_the_recent_window_to_the_penalty():
    """Greedy on fixed logits repeats its favourite; penalised, it moves on to the next best while
    its favourite is in the window, and returns to it once it has left."""
    from musicgen.generation import generate

    class Fixed(torch.nn.Module):
        context_len = 64

        def forward(self, idx, last_only=False):
            return torch.tensor([[0.0, 0.0, 0.0, 3.0, 2.0, 1.0]]).expand(idx.size(0), 6)

    prompt = torch.tensor([[1]])
    assert generate(Fixed(), prompt, 4, SamplingConfig(greedy=True))[0, 1:].tolist() == [3, 3, 3, 3]
    cfg = SamplingConfig(greedy=True, repetition_penalty=2.0, repetition_window=2)
    # window 2: [1, 3] -> 3 at 1.5 < 4 at 2 -> 4; [3, 4] -> 3 at 1.5 > 4 at 1, 5 at 1 -> 3; [4, 3] -> 3 again;
    # [3, 3] -> 4
    assert generate(Fixed(), prompt, 6, cfg)[0, 1:].tolist() == [3, 4, 3, 3, 4, 3]
    long = SamplingConfig(greedy=True, repetition_penalty=2.0, repetition_window=64)
    assert generate(Fixed(), prompt, 4, long)[0, 1:].tolist() == [3, 4, 3, 3]
