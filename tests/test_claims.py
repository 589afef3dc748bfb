"""The claim helpers choose readings from intervals and fail loudly on a false claim."""

import pytest

from hihpq_lib.evaluation import claims


@pytest.mark.parametrize(
    "low, high, reading",
    [
        (0.0208, 0.0417, "a clear gain"),  # notebook 05's full run: excludes 0
        (-0.0207, -0.0026, "a clear loss"),
        (0.000, 0.018, "within noise"),  # touching 0 is not clear of it
        (-0.014, 0.005, "within noise"),
    ],
)
def test_interval_reading(low, high, reading):
    assert claims.interval_reading(low, high) == reading
    assert claims.excludes_zero(low, high) == (reading != "within noise")


def test_interval_reading_rejects_swapped_or_nan_bounds():
    with pytest.raises(ValueError, match="low > high"):
        claims.interval_reading(0.04, 0.02)
    with pytest.raises(ValueError, match="finite"):
        claims.interval_reading(float("nan"), 0.02)


def test_check_raises_with_the_claim_and_passes_silently():
    claims.check(True, "anything")
    with pytest.raises(AssertionError, match="the text claims: roughly doubles .*ratio=1.45"):
        claims.check(1.45 >= 1.8, "roughly doubles the ARI", ratio=1.45)


def test_say_formats_markdown():
    md = claims.say(
        "difference {d:+.4f}, interval {i}", d=0.0312, i=claims.fmt_interval(0.02, 0.04)
    )
    assert md.data == "difference +0.0312, interval [+0.0200, +0.0400]"
    assert claims.fmt_interval(-0.03, -0.01) == "[-0.0300, -0.0100]"


def test_direction_and_ratio_range():
    assert claims.direction(0.5769, 0.5422) == "higher"
    assert claims.direction(0.1, 0.2, down="fell") == "fell"
    assert claims.ratio_range([0.3, 0.34], [0.2, 0.2]) == pytest.approx((1.5, 1.7))
    with pytest.raises(ValueError):
        claims.ratio_range([1.0], [1.0, 2.0])
