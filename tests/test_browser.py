"""The notebooks as a student sees them: a real Chromium driven by Playwright.

* JupyterLab (started here on 127.0.0.1, a free port, a token, the project's Python as
  the ``python3`` kernel) opens notebooks 01 and 03, runs all cells, moves the live
  slider (curvature in 01, temperature in 03) and checks that the figure *in the cell*
  changed: its title and its data. This is what the display-handle redraw got wrong (the
  redraws went to JupyterLab's Log Console and the figure never changed).
* The book (``python -m book.build``, fast mode) is opened from ``file://``: every plotly
  figure rendered (a non-empty plot), maths rendered by MathJax, no console error, no
  request leaving the page's folder, and a kernel-free slider changes its figure.

Screenshots (before and after each slider move, and each book page) are saved under
``build/screenshots/`` for people to look at. Chromium is Debian's (``/usr/bin/chromium``,
or ``HIHPQ_CHROMIUM``); ``.ci/run`` installs it when missing. ``make test`` runs this file
after the notebooks were executed into ``build/notebooks`` (``nbmake --overwrite``), so
the book is converted from those outputs instead of being executed again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "build" / "screenshots"
EXECUTED = REPO / "build" / "notebooks"
CHROMIUM = os.environ.get("HIHPQ_CHROMIUM", "/usr/bin/chromium")
NB01 = "01_foundations__lorentz_geometry"
NB03 = "03_methods__hyperbolic_codebook_attention"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's (apt-get install -y chromium) "
            "or point HIHPQ_CHROMIUM at one"
        )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 as ``make lab`` starts it, over a copy of notebooks 01 and 03.

    The ``.py`` sources open directly as notebooks (the repository's
    ``.jupyter/labconfig`` makes jupytext's notebook view the default for them); copies,
    so that nothing the browser does can touch the tracked files.
    """
    root = tmp_path_factory.mktemp("lab")
    for stem in (NB01, NB03):
        shutil.copyfile(REPO / "notebooks" / f"{stem}.py", root / f"{stem}.py")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "HIHPQ_FAST": "1",
        "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
        "JUPYTER_CONFIG_PATH": str(REPO / ".jupyter"),
    }
    env.pop("MPLBACKEND", None)  # the notebooks' %matplotlib inline decides
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",  # CI runs as root
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={root / '.settings'}",
        f"--LabApp.workspaces_dir={root / '.workspaces'}",
    ]
    # no "get notified about Jupyter news?" toast over the figures in the screenshots
    news = (
        root
        / ".settings"
        / "@jupyterlab"
        / "apputils-extension"
        / "notification.jupyterlab-settings"
    )
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urlopen(f"{url}/api/status?token={token}", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, token
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


#: True once every code cell of the open notebook ran ("[n]:" prompts, none "[*]:").
ALL_RAN = """() => {
  const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
  const ran = p.filter(e => /\\[\\d+\\]/.test(e.textContent)).length;
  // hidden solution cells show no prompt at all
  return ran > 0 && p.every(e => e.textContent.trim() === '' || /\\[\\d+\\]/.test(e.textContent));
}"""


#: True once Run All reached the kernel (a prompt shows "[*]:" or a number).
STARTED = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
  .some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))"""


def _run_all(page, url, token, stem):
    """Open ``stem``.py in JupyterLab (as a notebook, through jupytext) and Run All Cells."""
    # a workspace of its own, so that the previous test's notebook is not restored
    page.goto(f"{url}/lab/workspaces/nb{stem[:2]}/tree/{stem}.py?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # the kernel is up when the status bar says so (the execution indicator says "idle"
    # before a kernel is connected, and a Run All then silently does nothing)
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle")).first.wait_for(
        timeout=60_000
    )
    for _attempt in range(3):  # a Run All sent while the kernel still connects does nothing
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
        try:
            page.wait_for_function(STARTED, timeout=15_000, polling=250)
            break
        except Exception:
            continue
    try:
        page.wait_for_function(ALL_RAN, timeout=180_000, polling=500)
    except Exception:
        page.screenshot(path=SHOTS / f"lab_{stem[:2]}_not_done.png")
        prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_text_contents()
        pytest.fail(f"{stem}: not every cell ran after Run All: prompts {prompts}")
    assert (
        page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        .filter(has_text="Error")
        .count()
        == 0
    )


def _slider_figure(page, description):
    """The live slider box whose slider is labelled ``description``, and its plot."""
    box = page.locator(".widget-vbox").filter(
        has=page.locator(".widget-label", has_text=re.compile(f"^{re.escape(description)}$"))
    )
    box = box.first
    try:
        box.wait_for(state="attached", timeout=60_000)
    except Exception:
        page.screenshot(path=SHOTS / "lab_no_slider.png")
        labels = page.locator(".widget-label").all_text_contents()
        pytest.fail(f"no live slider labelled {description!r}; slider labels: {labels}")
    box.scroll_into_view_if_needed()
    try:
        box.locator(".js-plotly-plot .gtitle").first.wait_for(state="attached", timeout=60_000)
    finally:
        page.screenshot(path=SHOTS / "lab_last_page.png")
    box.scroll_into_view_if_needed()
    return box


#: Title of a plotly graph div, and a checksum of all its traces' x, y and z numbers.
PLOT_STATE = """gd => {
  let total = 0, count = 0;
  const add = v => {
    if (v == null) return;
    if (typeof v === 'number') { if (Number.isFinite(v)) { total += v * (1 + count % 7); count++; } return; }
    if (typeof v === 'string') { for (let i = 0; i < v.length; i += 7) { total += v.charCodeAt(i) * (1 + count % 7); count++; } return; }
    if (typeof v === 'object' && v.bdata !== undefined) return add(v.bdata);  // plotly's base64 arrays
    if (typeof v === 'object' && typeof v.length === 'number') for (const u of Array.from(v)) add(u);
  };
  for (const t of gd.data) { add(t.x); add(t.y); add(t.z); }
  return [gd.layout.title.text, `${count}:${total.toPrecision(12)}`];
}"""


def _plot_state(box):
    """Title and a checksum of the data of the plotly figure in the slider's output."""
    return box.locator(".js-plotly-plot").first.evaluate(PLOT_STATE)


def _move_slider(page, box, description, value, name):
    """Type ``value`` into the slider's readout (as a student can) and wait for the redraw."""
    before = _plot_state(box)
    box.screenshot(path=SHOTS / f"{name}_before.png")
    slider = box.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=re.compile(f"^{re.escape(description)}$"))
    )
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    t0 = time.perf_counter()
    page.keyboard.press("Enter")
    deadline = time.monotonic() + 30
    while _plot_state(box)[0] == before[0]:
        assert time.monotonic() < deadline, f"the figure did not change after moving {description}"
        time.sleep(0.02)
    redraw_s = time.perf_counter() - t0
    box.locator(".js-plotly-plot .main-svg").first.wait_for()
    page.wait_for_timeout(300)  # let plotly finish drawing before the screenshot
    after = _plot_state(box)
    box.screenshot(path=SHOTS / f"{name}_after.png")
    return before, after, redraw_s


def _record(name, value):
    path = REPO / "build" / "browser_timings.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[name] = value
    path.write_text(json.dumps(data, indent=1))


def test_lab_curvature_slider_redraws_the_figure_in_the_cell(browser, lab):
    url, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _run_all(page, url, token, NB01)
    box = _slider_figure(page, "c = 1/k")
    before, after, redraw_s = _move_slider(page, box, "c = 1/k", 4, "lab01_curvature")
    assert before[0].startswith("c = 1.00") and after[0].startswith("c = 4.00"), (before, after)
    assert before[1] != after[1]  # the points moved, not only the title
    _record("lab01_curvature_redraw_s", round(redraw_s, 3))
    page.close()


def test_lab_temperature_slider_redraws_the_figure_in_the_cell(browser, lab):
    url, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _run_all(page, url, token, NB03)
    box = _slider_figure(page, "T")
    before, after, redraw_s = _move_slider(page, box, "T", 10, "lab03_temperature")
    assert before[0].startswith("T = 1,") and after[0].startswith("T = 10,"), (before, after)
    assert before[1] != after[1]  # the entropy background changed, not only the title
    _record("lab03_temperature_redraw_s", round(redraw_s, 3))
    page.close()


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The book in fast mode, from the notebooks ``make test`` executed, else executed here."""
    from book.build import build

    executed = EXECUTED if _executed(EXECUTED) else None
    out = tmp_path_factory.mktemp("book") / "book"
    report = build(out, "fast", executed)
    return out, report


def _executed(folder: Path) -> bool:
    """Whether ``folder`` holds every notebook of the series with outputs."""
    import nbformat

    for src in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
        path = folder / f"{src.stem}.ipynb"
        if not path.is_file():
            return False
        nb = nbformat.read(path, as_version=4)
        if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
            return False
    return True


def test_book_pages_render_every_figure_and_the_maths_offline(browser, book):
    out, report = book
    pages = sorted(out.glob("[0-9][0-9]_*.html"))
    assert len(pages) == len(report["notebooks"]) >= 7
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors, outside = [], []

    def console(m):
        # no exception: MathJax's blank probe font (url('about:blank'), refused from
        # file:// with two errors) is pointed at a local() source by the book's template
        if m.type == "error":
            errors.append(f"{html_page_name[0]}: {m.text} ({m.location.get('url', '')})")

    html_page_name = ["index.html"]  # the page being checked, named in each error

    page.on("console", console)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "request",
        lambda r: (
            outside.append(r.url)
            if not r.url.startswith(("file://", "data:", "about:blank"))
            else None
        ),
    )
    page.goto(out.joinpath("index.html").as_uri())
    cards = page.locator(".card")
    assert cards.count() == len(pages)
    assert page.locator(".card img").count() == len(pages)  # a thumbnail per notebook
    # ... each drawn by this build from the figure of the cell tagged "thumbnail"
    assert report["thumbnails"] == {p.stem: "tagged cell" for p in pages}
    assert all(
        page.locator(".card img").nth(i).evaluate("i => i.naturalWidth") > 0
        for i in range(len(pages))
    )
    assert page.locator("code", has_text="make lab").count() >= 1
    page.screenshot(path=SHOTS / "book_index.png", full_page=True)
    for html_page in pages:
        html_page_name[0] = html_page.name
        page.goto(html_page.as_uri())
        expected = report["notebooks"][html_page.stem]["plotly_figures"]
        page.wait_for_function(
            "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && document.querySelectorAll('.MathJax, .MathJax_Display').length > 0",
            timeout=60_000,
        )
        plots = page.locator(".plotly-graph-div")
        assert plots.count() == expected, html_page.name
        for i in range(expected):
            plot = plots.nth(i)
            plot.locator(".main-svg").first.wait_for(state="attached", timeout=30_000)
            n_traces = plot.evaluate("gd => (gd.data || []).length")
            box = plot.bounding_box()
            assert n_traces > 0 and box and box["height"] > 100, (html_page.name, i)
            plot.scroll_into_view_if_needed()
            plot.screenshot(path=SHOTS / f"book_{html_page.stem[:2]}_plotly{i + 1}.png")
        # the navigation bar holds its "static copy" note: nothing of it is drawn over the page
        nav, note = page.locator(".hihpq-nav").bounding_box(), page.locator(".hihpq-live")
        note_box = note.bounding_box()
        assert nav and note_box and note_box["y"] + note_box["height"] <= nav["y"] + nav["height"]
        page.screenshot(path=SHOTS / f"book_{html_page.stem[:2]}.png")
    assert not errors, f"the book's pages logged console errors: {errors}"
    assert not outside, f"the book fetched from outside its folder: {outside[:5]}"
    page.close()


def test_book_kernel_free_slider_changes_its_figure(browser, book):
    out, _ = book
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto(out.joinpath(f"{NB01}.html").as_uri())
    plot = page.locator(".plotly-graph-div").filter(has=page.locator(".slider-container")).first
    plot.scroll_into_view_if_needed()
    title = "gd => gd.layout.title.text"
    sheet = "gd => gd.layout.annotations[0].text"  # the 3-D view's subplot title
    before, sheet_before = plot.evaluate(title), plot.evaluate(sheet)
    plot.screenshot(path=SHOTS / "book01_curvature_before.png")
    rail = plot.locator(".slider-rail-rect").first.bounding_box()
    page.mouse.click(rail["x"] + rail["width"] - 2, rail["y"] + rail["height"] / 2)  # last step
    page.wait_for_function(
        f"gd => ({title})(gd) !== {json.dumps(before)}", arg=plot.element_handle(), timeout=10_000
    )
    page.wait_for_timeout(300)
    after, sheet_after = plot.evaluate(title), plot.evaluate(sheet)
    plot.screenshot(path=SHOTS / "book01_curvature_after.png")
    assert before.startswith("c = 1.00") and after.startswith("c = 10.00"), (before, after)
    # the subplot title counts the points beyond the drawn sheet of the frame shown
    assert sheet_before != sheet_after and "beyond the drawn sheet" in sheet_after, (
        sheet_before,
        sheet_after,
    )
    page.close()
