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


# Edge cases of generated sentences (issue 27): a reading never calls a significant
# negative difference a gain, and a count of "stand out" is split by sign.


@pytest.mark.parametrize(
    "low, high, reading",
    [
        (-0.0207, -0.0026, "a clear loss"),  # significantly negative: never "gain"
        (-0.02, 0.0, "within noise"),  # touching 0 from below
        (0.0, 0.0, "within noise"),  # a zero-width interval at 0
        (1e-9, 2e-9, "a clear gain"),  # tiny, but clear of 0
    ],
)
def test_interval_reading_edges(low, high, reading):
    assert claims.interval_reading(low, high) == reading
    custom = claims.interval_reading(low, high, gain="a gain", loss="a loss", noise="noise")
    assert custom == {"a clear gain": "a gain", "a clear loss": "a loss"}.get(reading, "noise")


def test_direction_edges():
    assert claims.direction(0.5, 0.5) == "equal"
    assert claims.direction(-0.01, 0.0, up="a gain", down="a loss") == "a loss"
    with pytest.raises(ValueError, match="finite"):
        claims.direction(float("nan"), 0.5)  # NaN used to read as "equal"


def test_notebook_07_gain_sentence_counts_losses_apart():
    """6 of 8 geometry contrasts stand out, 2 of them significantly negative: that is not
    "a measurable gain at most settings" (notebook 07's generated sentence said it was)."""
    deltas = [0.03, 0.02, 0.015, 0.01, -0.02, -0.012, 0.003, -0.001]
    real = [True, True, True, True, True, True, False, False]
    counts = claims.tally(deltas, real)
    assert counts == {"gain": 4, "loss": 2, "noise": 2}
    reading = claims.majority_reading(counts)
    assert "gain" not in reading and "both directions" in reading
    # the same six, all positive, is a gain; all six negative, a loss
    assert claims.majority_reading(claims.tally([abs(d) for d in deltas], real)) == (
        "a measurable gain at most settings"
    )
    assert claims.majority_reading(claims.tally([-abs(d) for d in deltas], real)) == (
        "a measurable loss at most settings"
    )
    assert claims.majority_reading(claims.tally(deltas, [False] * 8)) == "mostly within noise"


def test_tally_rejects_bad_input():
    with pytest.raises(ValueError):
        claims.tally([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="finite"):
        claims.tally([float("nan")], [True])
    with pytest.raises(ValueError):
        claims.majority_reading({"gain": 0, "loss": 0, "noise": 0})
    assert claims.tally([0.0], [True]) == {"gain": 0, "loss": 0, "noise": 1}


def test_a_failed_check_is_shown_to_the_reader(capsys, monkeypatch):
    monkeypatch.delenv("HIHPQ_CLAIMS", raising=False)
    with pytest.raises(AssertionError, match="the text claims: the curves coincide"):
        claims.check(False, "the curves coincide", gap=0.2)
    err = capsys.readouterr().err
    assert "CLAIM NOT SUPPORTED BY THIS RUN: the text claims: the curves coincide" in err
    monkeypatch.setenv("HIHPQ_CLAIMS", "warn")  # a reader on other data may go on
    claims.check(False, "the curves coincide")
    assert "CLAIM NOT SUPPORTED" in capsys.readouterr().err
    claims.check(True, "the curves coincide")
    assert capsys.readouterr().err == ""


@pytest.mark.timeout(120)
def test_a_failed_check_shows_a_warning_in_the_notebook_and_stops_it():
    """In a notebook the failed claim is a visible block of the cell's output (not only a
    traceback), and the cell still fails, so nbmake (CI) fails."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from hihpq_lib.evaluation import claims\ngap = 0.0312"),
        nbformat.v4.new_markdown_cell("The difference is within noise."),
        nbformat.v4.new_code_cell(
            'claims.check(abs(gap) < 0.01, "the difference is within noise")'
        ),
    ]
    client = nbclient.NotebookClient(nb, timeout=60, kernel_name="python3")
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="the text claims"):
        client.execute()
    outputs = nb.cells[2].outputs
    shown = [o["data"]["text/markdown"] for o in outputs if o["output_type"] == "display_data"]
    assert shown and "not supported by this run" in shown[0]
    assert any(o["output_type"] == "error" for o in outputs)


@pytest.mark.parametrize(
    "superclass, cls, expected",
    [
        ((0.085, 0.108), (0.016, 0.035), "Both levels show a clear gain: they point the same way."),
        (
            (-0.03, -0.01),
            (-0.02, -0.005),
            "Both levels show a clear loss: they point the same way.",
        ),
        # a significant loss never agrees with a gain
        ((-0.03, -0.01), (0.016, 0.035), "opposite directions**: a clear loss at the superclass"),
        # same sign of the point estimates, but one is noise: not "the same way"
        ((0.085, 0.108), (-0.002, 0.03), "Only the superclass level shows a clear gain"),
        ((-0.004, 0.01), (-0.03, -0.01), "Only the class level shows a clear loss"),
        ((-0.01, 0.01), (-0.02, 0.001), "Neither level shows a clear difference."),
    ],
)
def test_joint_reading_of_two_levels(superclass, cls, expected):
    """Notebook 05's sentence after the superclass bootstrap (it used to compare the signs
    of the point estimates, calling a difference within noise a direction)."""
    sentence = claims.joint_reading(superclass, cls, names=("superclass", "class"))
    assert expected in sentence
    assert ("same way" in sentence) == (expected.endswith("same way."))


def test_split_reading_tells_splits_from_sweeps():
    """A split count reads "not significant"; a 3-of-3 sweep is never called a split."""
    text = claims.split_reading({"a − b": 3, "a − c": 2, "b − c": 0}, 3)
    assert "`a − c` split (2 of 3)" in text
    assert "`a − b`, `b − c` each went one way at every seed" in text
    assert "`a − b` split" not in text and "`b − c` split" not in text
    assert "0.25" in text and "hint, not a verdict" in text
    # with 7 seeds a sweep has probability 2/128 < 0.05
    assert "unlikely to be chance" in claims.split_reading({"a − b": 7}, 7)
    assert "split" not in claims.split_reading({"a − b": 7}, 7)
    for bad in ({"a − b": 4}, {"a − b": -1}):
        with pytest.raises(ValueError, match="win counts"):
            claims.split_reading(bad, 3)
