"""Notebook hygiene: naming, structure, exercises, no committed outputs, nothing silently skipped.

The notebooks themselves are executed by ``make test``: it converts every
``notebooks/NN_track__title.py`` (jupytext py:percent) into ``build/notebooks/*.ipynb`` and
runs them with ``pytest --nbmake`` in fast mode, one pytest item per notebook, each with
the timeout from its ``execution: timeout`` header metadata. The structure rules checked
here are written up in ``notebooks/README.md``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jupytext
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
BUILD = REPO / "build" / "notebooks"

#: Notebooks that CI does not execute, with the reason (shown in the test report).
#: Keep it empty; a notebook listed here must also be left out of the Makefile's
#: ``notebooks`` target.
SKIP: dict[str, str] = {}

NAME = re.compile(
    r"^(?P<number>\d{2})_(?P<track>[a-z0-9]+)__(?P<title>[a-z0-9]+(?:_[a-z0-9]+)*)\.py$"
)
OPENING_HEADINGS = {
    "what you will learn": re.compile(r"^#+\s*what you will learn\b", re.I | re.M),
    "what you need": re.compile(r"^#+\s*what you need\b", re.I | re.M),
    "how long it takes": re.compile(r"^#+\s*how long it takes\b", re.I | re.M),
}
EXERCISE = re.compile(r"^#+\s*exercise\b", re.I | re.M)

SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
IDS = [p.stem for p in SOURCES]


def _read(path: Path):
    return jupytext.read(path, fmt="py:percent")


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def test_there_are_notebooks():
    assert SOURCES, f"no notebooks/NN_track__title.py found in {NOTEBOOKS}"


def test_no_tracked_ipynb_with_outputs():
    """Notebooks are committed as py:percent text; any tracked .ipynb must be output-free."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: cannot list tracked files")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.ipynb"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    offenders = []
    for rel in filter(None, listed.split("\0")):
        nb = json.loads((REPO / rel).read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            if cell.get("outputs") or cell.get("execution_count") is not None:
                offenders.append(rel)
                break
    assert not offenders, (
        f"tracked notebooks with outputs (clear them or commit the .py): {offenders}"
    )


def test_notebook_numbers_are_unique():
    numbers = [p.name[:2] for p in SOURCES]
    dupes = sorted({n for n in numbers if numbers.count(n) > 1})
    assert not dupes, f"two notebooks share the number(s) {dupes}: the number gives the order"


def test_skip_list_names_existing_notebooks_with_reasons():
    for name, reason in SKIP.items():
        assert (NOTEBOOKS / f"{name}.py").is_file(), f"SKIP lists {name!r}, which does not exist"
        assert isinstance(reason, str) and reason.strip(), f"SKIP[{name!r}] needs a reason"


def test_skip_list_matches_the_makefile():
    """SKIP and the Makefile's ``NB_SKIP`` (what ``make test`` leaves out) name the same notebooks."""
    m = re.search(r"^NB_SKIP\s*:=(.*)$", (REPO / "Makefile").read_text(), re.M)
    assert m, "the Makefile has no NB_SKIP line"
    assert {Path(p).stem for p in m.group(1).split()} == set(SKIP)


@pytest.mark.parametrize("name", sorted(SKIP))
def test_skipped_notebooks_are_reported(name):
    """One visible 'skipped' line per notebook in SKIP."""
    pytest.skip(f"notebook {name} is not executed in CI: {SKIP[name]}")


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_name_follows_scheme(path):
    assert NAME.match(path.name), (
        f"{path.name}: name notebooks NN_track__title.py (two digits, a lowercase track, "
        "two underscores, a lowercase snake_case title), e.g. 01_foundations__lorentz_geometry.py"
    )


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_header_and_opening(path):
    nb = _read(path)
    assert path.read_text(encoding="utf-8").startswith("# ---\n"), "start with the jupytext header"
    timeout = nb.metadata.get("execution", {}).get("timeout")
    assert isinstance(timeout, int) and 0 < timeout <= 600, (
        "set a per-notebook timeout (seconds) in the header: jupyter: execution: timeout: 300"
    )
    assert nb.cells and nb.cells[0].cell_type == "markdown", "open with a markdown cell"
    opening = nb.cells[0].source
    assert opening.lstrip().startswith("# "), (
        "the opening cell starts with the '# NN · title' heading"
    )
    missing = [h for h, rx in OPENING_HEADINGS.items() if not rx.search(opening)]
    assert not missing, f"the opening cell lacks the headings {missing}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "runtime.seed_everything" in code[0].source, (
        "the first code cell is the setup cell: it calls runtime.seed_everything"
    )
    assert any("further reading" in c.source.lower() for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_exercises_have_student_solution_and_check_cells(path):
    cells = _read(path).cells
    starts = [
        i for i, c in enumerate(cells) if c.cell_type == "markdown" and EXERCISE.search(c.source)
    ]
    assert len(starts) >= 2, f"{path.name}: write at least two exercises ('### Exercise N — ...')"
    for i in starts:
        where = f"{path.name}, exercise at cell {i}"
        assert i + 3 < len(cells), f"{where}: needs a student, a solution and a check cell after it"
        student, solution, check = cells[i + 1], cells[i + 2], cells[i + 3]
        assert student.cell_type == "code" and re.search(
            r"^answer = None\b", student.source, re.M
        ), f"{where}: the cell after the task is the student's: 'answer = None  # your code'"
        assert not _tags(student), f"{where}: the student cell has no tags"
        assert solution.cell_type == "code" and "solution" in _tags(solution), (
            f"{where}: then a solution cell tagged 'solution'"
        )
        assert solution.metadata.get("jupyter", {}).get("source_hidden") is True, (
            f"{where}: hide the solution's input (jupyter.source_hidden: true)"
        )
        assert solution.source.lstrip().startswith("if answer is None:"), (
            f"{where}: the solution only fills answer when the student left it None"
        )
        assert check.cell_type == "code" and "check" in _tags(check), (
            f"{where}: then a check cell tagged 'check'"
        )
        assert re.search(r"^\s*assert\b", check.source, re.M), f"{where}: the check cell asserts"


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_every_notebook_is_built_for_execution(path):
    """No silent skips: each notebook not in SKIP has its .ipynb in build/notebooks."""
    if not BUILD.is_dir():
        pytest.skip("build/notebooks does not exist: run `make notebooks` (make test does)")
    built = BUILD / f"{path.stem}.ipynb"
    if path.stem in SKIP:
        return
    assert built.is_file(), (
        f"{built.relative_to(REPO)} is missing: `make notebooks` converts every notebook, or "
        f"list {path.stem!r} in SKIP with a reason"
    )


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_claims_are_generated_or_checked(path):
    """Prose numbers come from the run: ``claims.say`` cells, and ``claim`` cells that check.

    A cell tagged ``claim`` asserts what the neighbouring text says about the printed
    values (``claims.check`` or ``assert``), so a changed result fails the notebook in CI
    instead of leaving a false sentence (issue 15).
    """
    cells = _read(path).cells
    checks = [c for c in cells if c.cell_type == "code" and "claim" in _tags(c)]
    assert checks, f"{path.name}: no cell tagged 'claim' checks the text against the run"
    for c in checks:
        assert "claims.check(" in c.source or re.search(r"^\s*assert\b", c.source, re.M), (
            f"{path.name}: a 'claim' cell must check something: {c.source[:80]!r}"
        )


STALE = re.compile(r"when this notebook was (last )?(run|written)|in our runs:", re.I)


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_no_stale_results_typed_into_markdown(path):
    """Results of earlier runs typed into the text go stale; say them from the run instead."""
    for cell in _read(path).cells:
        if cell.cell_type == "markdown":
            m = STALE.search(cell.source)
            assert not m, f"{path.name}: {m.group(0)!r} in markdown: generate it with claims.say"


def test_a_false_claim_fails_the_notebook(tmp_path):
    """What nbmake sees: a notebook whose claim cell disagrees with its output fails."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from hihpq_lib.evaluation import claims\ngap = 0.0312"),
        nbformat.v4.new_markdown_cell("The difference is within noise."),
        nbformat.v4.new_code_cell(
            'claims.check(abs(gap) < 0.01, "the difference is within noise")',
            metadata={"tags": ["claim"]},
        ),
    ]
    client = nbclient.NotebookClient(
        nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="the text claims"):
        client.execute()


DEEP = NOTEBOOKS / "08_methods__deep_hierarchies.py"


@pytest.mark.skipif(not DEEP.is_file(), reason="notebook 08 is not in this checkout")
@pytest.mark.timeout(900)  # first run: the features of 2,000 images and two trainings
def test_deep_hierarchies_runs_on_tiny_imagenet(tiny_imagenet_dir, monkeypatch):
    """Notebook 08 with its data: ``make test`` (nbmake) runs it without
    ``HIHPQ_TINY_IMAGENET`` (sections 1-2 on the synthetic tree, section 3 skipped); this
    runs it in fast mode on the development copy of the Tiny-ImageNet subset, WordNet tree
    and HiHPQ vs its Euclidean twin included."""
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("HIHPQ_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("HIHPQ_TINY_IMAGENET", str(tiny_imagenet_dir))
    nb = jupytext.read(DEEP, fmt="py:percent")
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    text = "\n".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )
    assert "WordNet, the 200 Tiny-ImageNet classes: " in text
    assert "test mAP@" in text and "Section 3 needs the images" not in text


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_one_thumbnail_cell_draws_a_static_figure(path):
    """The book's thumbnail is the PNG of the cell tagged "thumbnail", from the run it shows."""
    cells = [c for c in _read(path).cells if "thumbnail" in _tags(c)]
    assert len(cells) == 1, f"{path.name}: tag one figure cell with tags=['thumbnail']"
    assert cells[0].cell_type == "code" and "viz." in cells[0].source, cells[0].source[:200]


def test_no_committed_thumbnails_and_the_build_takes_the_tagged_figure():
    """No picture of an older run stands in for a notebook (issue 27): none is committed."""
    import base64

    import nbformat

    from book.build import thumbnail_png

    assert not sorted((NOTEBOOKS / "figures").glob("*_thumb.png"))
    first, tagged = b"\x89PNG first", b"\x89PNG tagged"

    def image_cell(png, tags=()):
        out = nbformat.v4.new_output(
            "display_data", data={"image/png": base64.b64encode(png).decode()}
        )
        return nbformat.v4.new_code_cell("x", outputs=[out], metadata={"tags": list(tags)})

    nb = nbformat.v4.new_notebook(cells=[image_cell(first), image_cell(tagged, ["thumbnail"])])
    assert thumbnail_png(nb) == (tagged, "tagged cell")
    nb.cells[1].metadata["tags"] = []
    assert thumbnail_png(nb) == (first, "first image")
    assert thumbnail_png(nbformat.v4.new_notebook()) == (None, "none")
