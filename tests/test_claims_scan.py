"""Every sentence about a run is generated or checked (conventions, "Notebooks" rule 7).

``claims.scan_notebook`` reads a notebook's markdown cells and the literal text of its
``claims.say`` templates, splits them into sentences and flags those that state a decimal
or percent number, a direction ("rises", "drops") or a comparison ("beats", "the same",
"differ", "most") without being generated (a ``{placeholder}`` of ``claims.say``) or
followed, before the next markdown cell, by a ``claims.check`` whose claim names them.
The true exceptions (definitions, the paper, reasoning) are listed with a reason in
``notebooks/claims_allowlist.yaml``.

When the scanner was written (issue 27) it flagged, before any fix and with no
allow-list, 12 sentences in notebook 01, 9 in 02, 13 in 03, 12 in 04, 13 in 05, 10 in 06,
26 in 07 and 9 in 08 (104 in all).
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

from hihpq_lib.evaluation import claims

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
ALLOWLIST = NOTEBOOKS / "claims_allowlist.yaml"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "99_test__scan.py"
    path.write_text(body, encoding="utf-8")
    return path


NOTEBOOK = """# %% [markdown]
# # 99 · A test notebook
# The curvature is a knob.

# %%
x = 1

# %% [markdown]
# The loss drops to 0.42 after training. The curves are the same.

# %% tags=["claim"]
claims.check(x > 0, "the loss drops after training")

# %%
claims.say("mAP rose from {a:.3f} to {b:.3f}.", a=0.1, b=0.2)

# %%
claims.say("mAP is {reading} ({a:.3f}).", reading="higher", a=0.1)
"""


def test_scan_flags_unchecked_sentences_and_literal_directions(tmp_path):
    found = claims.scan_notebook(_write(tmp_path, NOTEBOOK))
    assert [(f.cell, f.sentence, f.kind) for f in found] == [
        (2, "The curves are the same.", "markdown"),
        (4, "mAP rose from {a:.3f} to {b:.3f}.", "say"),
    ]
    assert found[0].words == ("are the same",)
    assert str(found[0]) == "99_test__scan:2: The curves are the same.  [are the same]"


def test_opening_and_summary_may_be_checked_anywhere(tmp_path):
    """The opening and the "Summary" restate the lesson: a check anywhere names them."""
    body = (
        "# %% [markdown]\n# # 99 · Title\n# ## What you will learn\n"
        "# - why the loss drops after training\n\n"
        "# %% [markdown]\n# Section text.\n\n"
        '# %% tags=["claim"]\nclaims.check(True, "the loss drops after training")\n\n'
        "# %% [markdown]\n# ## Summary\n# - the loss drops after training.\n"
        "# - the curves are the same.\n"
    )
    found = claims.scan_notebook(_write(tmp_path, body))
    assert [(f.cell, f.sentence) for f in found] == [(3, "the curves are the same.")]


def test_a_check_names_only_its_own_sentence():
    assert claims.names("the loss drops after training", "The loss drops to 0.42 after training.")
    assert not claims.names("the loss drops after training", "The curves are the same.")
    assert not claims.names("", "The curves are the same.")


@pytest.mark.parametrize(
    "sentence, words",
    [
        ("Large $c$ (small $k$) = strongly curved.", []),
        ("The same figure as a static image:", []),
        ("clip at most `clip_r = 1.5`, see [docs](a/1.5.md)", []),
        ("at least squares; least squares fit", []),
        ("the two levels point the same way", ["point the same way"]),
        ("The soft error is 12.5% lower", ["lower", "12.5%"]),
        ("How can the two levels move differently?", ["differently"]),
        ("In this run both are nearly equal", ["are nearly equal", "this run"]),
        ("Version 1.19.6 and section 3.", []),
    ],
)
def test_claim_words(sentence, words):
    assert claims.claim_words(sentence) == words


def test_a_template_counts_only_its_fixed_direction_words():
    assert claims.claim_words("In this run {x:.3f} ({p:.0%}) is {reading}", generated=True) == []
    assert claims.claim_words("mAP rose by {d:+.3f}", generated=True) == ["rose"]


def test_split_sentences_keeps_maths_code_and_abbreviations_whole():
    text = (
        "# 2. A heading\nIt rises, e.g. to $x = 1.5$. Then `a. B` stays.\n\n"
        "| a | 0.5 |\n- item one. Item two\n"
    )
    assert claims.split_sentences(text) == [
        "2. A heading",
        "It rises, e.g. to $x = 1.5$.",
        "Then `a. B` stays.",
        "| a | 0.5 |",
        "item one.",
        "Item two",
    ]


def test_allowlist_exempts_by_sentence_start(tmp_path):
    path = _write(tmp_path, NOTEBOOK)
    allow = tmp_path / "allow.yaml"
    allow.write_text(
        "99_test__scan:\n  - sentence: The curves are\n    reason: a definition\n"
        "  - sentence: Nothing like this\n    reason: stale\n",
        encoding="utf-8",
    )
    entries = claims.load_allowlist(allow)
    assert [f.cell for f in claims.scan_notebook(path, entries)] == [4]
    assert [a.sentence for a in claims.unused_allowances([path], entries)] == ["Nothing like this"]
    allow.write_text("99_test__scan:\n  - sentence: The curves are\n", encoding="utf-8")
    with pytest.raises(ValueError, match="reason"):
        claims.load_allowlist(allow)


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_cells_are_numbered_as_jupytext_numbers_them(path):
    """A finding's cell number is the cell's index in the converted/executed notebook."""
    nb = jupytext.read(path, fmt="py:percent")
    ours = claims.notebook_cells(path)
    assert [(c.cell_type, c.source) for c in nb.cells] == [(k, s) for k, s, _ in ours]
    assert [list(c.metadata.get("tags", [])) for c in nb.cells] == [t for _, _, t in ours]


def test_allowlist_entries_have_reasons_and_are_used():
    entries = claims.load_allowlist(ALLOWLIST)
    stems = {p.stem for p in SOURCES}
    assert {a.notebook for a in entries} <= stems, "the allow-list names a missing notebook"
    stale = claims.unused_allowances(SOURCES, entries)
    assert not stale, "allow-list entries that exempt nothing (remove them):\n" + "\n".join(
        f"{a.notebook}: {a.sentence}" for a in stale
    )


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_sentences_about_a_run_are_generated_or_checked(path):
    found = claims.scan_notebook(path, claims.load_allowlist(ALLOWLIST))
    assert not found, (
        f"{len(found)} sentence(s) state a result without claims.say or a claims.check that "
        "names them (generate the sentence, add a check after it, or list a true exception "
        f"with its reason in {ALLOWLIST.relative_to(REPO)}):\n" + "\n".join(f"  {f}" for f in found)
    )
