"""Build the static book of the executed notebook series: ``python -m book.build``.

Each ``notebooks/NN_*.py`` is executed (or taken already executed from ``--executed``),
exported to HTML with nbconvert's JupyterLab template, and linked from a landing page
with a thumbnail per notebook: the figure of its cell tagged ``thumbnail``, taken from
the outputs this build converts (so it shows the run the page shows; no picture is
committed for it). The site works offline, from ``file://`` or any static
server: plotly.js and MathJax are copied beside the pages, and nothing is fetched from a
CDN. Plotly figures come from their ``text/html`` outputs (``hihpq_lib.viz`` selects a
renderer that writes them); the kernel-free sliders (``viz.slider_frames``) keep working;
the live ipywidgets sliders, which need a kernel, are replaced by a note.

Why plain nbconvert: it is Jupyter's own exporter, already installed with JupyterLab,
renders the outputs exactly as JupyterLab's HTML export does, and needs no Node.js,
theme download or network at build time (jupyter-book 2 builds through Node.js;
mkdocs-jupyter adds mkdocs and a theme and also loads require.js and MathJax from CDNs).

Mode: ``--mode auto`` (the default) executes in full mode when the cached backbone
features exist (``runtime.cache_dir()/features``, made by ``make demo``) and in fast
mode (``HIHPQ_FAST=1``) otherwise; ``--executed DIR`` converts notebooks executed earlier
(e.g. by ``make test``) without running them again.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
NOTEBOOKS = ROOT / "notebooks"
#: The cell tag that marks a notebook's thumbnail figure (a cell with a PNG output: the
#: matplotlib twin of the key figure), and the thumbnails' width in pixels.
THUMB_TAG = "thumbnail"
THUMB_WIDTH = 480
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
LIVE_NOTE = (
    '<div class="hihpq-live-note">Live slider: it needs a running Python kernel. Open this '
    "notebook with <code>make lab</code> to move it; on this page, use the figure with "
    "its own slider below.</div>"
)


def fail(msg: str) -> None:
    print(f"book: {msg}", file=sys.stderr)
    raise SystemExit(2)


def sources() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def features_cached() -> bool:
    sys.path.insert(0, str(ROOT))
    from hihpq_lib.utils import runtime

    return any((runtime.cache_dir() / "features").glob("*.pt"))


def execute(src: Path, workdir: Path, fast: bool) -> nbformat.NotebookNode:
    """Run one notebook with the project's ``python3`` kernel, in ``workdir``."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(src)
    timeout = int(nb.metadata.get("execution", {}).get("timeout", 600))
    env_fast = os.environ.get("HIHPQ_FAST")
    env_project = os.environ.get("HIHPQ_PROJECT_DIR")
    os.environ["HIHPQ_FAST"] = "1" if fast else "0"
    # the kernels run in ``workdir`` (possibly outside the checkout) but read and write this
    # checkout's data/, runs/ and configs/, as the notebooks do in JupyterLab
    os.environ["HIHPQ_PROJECT_DIR"] = env_project or str(ROOT)
    try:
        NotebookClient(
            nb,
            timeout=timeout * (1 if fast else 4),
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
        ).execute()
    finally:
        for key, value in (("HIHPQ_FAST", env_fast), ("HIHPQ_PROJECT_DIR", env_project)):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nb


def is_plotly_js(output) -> bool:
    """The output that embeds plotly.js itself (the page loads its own copy instead)."""
    text = output.get("data", {}).get("text/html", "")
    text = "".join(text) if isinstance(text, list) else text
    return len(text) > 1_000_000 and "plotly.js" in text[:5000]


def prepare(nb: nbformat.NotebookNode) -> dict[str, int]:
    """Adapt executed outputs for a static page; return counts of what was changed."""
    counts = {"plotly_js": 0, "live_sliders": 0, "plotly_figures": 0}
    nb.metadata.pop("widgets", None)  # no widget state: nothing to fetch a widget manager for
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if is_plotly_js(out):
                counts["plotly_js"] += 1
                continue
            if WIDGET_VIEW in data:
                text = data.get("text/plain", "")
                text = "".join(text) if isinstance(text, list) else text
                if "Slider(" in text:  # viz.slider_figure's box of sliders
                    counts["live_sliders"] += 1
                    out = nbformat.v4.new_output("display_data", data={"text/html": LIVE_NOTE})
                else:  # e.g. a tqdm progress bar: its text form
                    out = nbformat.v4.new_output("display_data", data={"text/plain": text})
            elif "application/vnd.plotly.v1+json" in data:
                counts["plotly_figures"] += 1
                if "text/html" not in data:
                    fail(
                        "a plotly figure has no HTML output; hihpq_lib.viz sets the renderer "
                        "when imported in a kernel (is PLOTLY_RENDERER set?)"
                    )
            kept.append(out)
        cell.outputs = kept
    return counts


def title_and_summary(nb: nbformat.NotebookNode) -> tuple[str, str]:
    text = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    lines = text.splitlines()
    title = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("# ")), "notebook")
    para, started = [], False
    for ln in lines[1:]:
        if ln.strip() and not ln.startswith("#"):
            para.append(ln.strip())
            started = True
        elif started:
            break
    summary = re.sub(r"\*|`|\$", "", " ".join(para))
    return title, summary[:320] + ("…" if len(summary) > 320 else "")


def thumbnail_png(nb: nbformat.NotebookNode) -> tuple[bytes | None, str]:
    """The PNG of the executed notebook's thumbnail figure, and where it came from.

    The first image output of the cell tagged ``thumbnail`` (``# %% tags=["thumbnail"]``
    in the ``.py`` source); else the notebook's first image (``"first image"``); else
    ``None`` (``"none"``). Always from the outputs of this execution, never a file.
    """
    tagged = [c for c in nb.cells if THUMB_TAG in c.get("metadata", {}).get("tags", [])]
    for where, cells in (("tagged cell", tagged), ("first image", nb.cells)):
        for cell in cells:
            for o in cell.get("outputs", []):
                png = o.get("data", {}).get("image/png")
                if png:
                    return base64.b64decode("".join(png) if isinstance(png, list) else png), where
    return None, "none"


def thumbnail(stem: str, nb: nbformat.NotebookNode, out: Path) -> tuple[str | None, str]:
    """Write ``thumbs/NN.png`` (at most ``THUMB_WIDTH`` px wide) from the executed notebook.

    Returns the page-relative path (``None`` without any image) and its source (see
    :func:`thumbnail_png`).
    """
    png, where = thumbnail_png(nb)
    if png is None:
        return None, where
    target = out / "thumbs" / f"{stem[:2]}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    from io import BytesIO

    from PIL import Image  # matplotlib's own dependency

    img = Image.open(BytesIO(png))
    if img.width > THUMB_WIDTH:
        img = img.resize((THUMB_WIDTH, round(img.height * THUMB_WIDTH / img.width)), Image.LANCZOS)
    img.save(target, optimize=True)
    return f"thumbs/{target.name}", where


def copy_assets(out: Path) -> None:
    import jupyter_server_mathjax
    import plotly

    shutil.copyfile(
        Path(plotly.__file__).parent / "package_data" / "plotly.min.js", out / "plotly.min.js"
    )
    mathjax = Path(jupyter_server_mathjax.__file__).parent / "static"
    # MathJax 2 as jupyter-server-mathjax ships it (TeX input, HTML-CSS output with the
    # STIX-Web fonts); the SVG output is not used by the configuration the pages load
    shutil.copytree(mathjax, out / "mathjax", ignore=shutil.ignore_patterns("SVG", "LICENSE"))
    shutil.copyfile(HERE / "book.css", out / "book.css")


def index_page(entries: list[dict], mode: str) -> str:
    cards = []
    for e in entries:
        img = f'<img src="{e["thumb"]}" alt="">' if e["thumb"] else ""
        cards.append(
            f'<a class="card" href="{e["href"]}">{img}<h2>{html.escape(e["title"])}</h2>'
            f"<p>{html.escape(e['summary'])}</p></a>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hihpq: the notebook series</title>
<link rel="stylesheet" href="book.css"></head>
<body class="hihpq-index">
<h1>hihpq — Hierarchical Hyperbolic Product Quantization, step by step</h1>
<p>The executed notebook series of <a href="../../README.md">hihpq</a> ({mode} mode), a
static copy: every plotly figure is interactive (zoom, hover, rotate), and the figures
with their own slider work here without Python. The live ipywidgets sliders need a
kernel: from the repository root, run <code>make lab</code> to open the notebooks in
JupyterLab with the project's kernel.</p>
<div class="series">
{chr(10).join(cards)}
</div>
</body></html>
"""


def build(out: Path, mode: str, executed: Path | None) -> dict:
    from nbconvert import HTMLExporter

    srcs = sources()
    if not srcs:
        fail(f"no notebooks found in {NOTEBOOKS}")
    if mode == "auto":
        mode = "full" if features_cached() else "fast"
    if executed is not None and not executed.is_dir():
        fail(f"--executed {executed} is not a folder (run make notebooks and make test first)")
    t0 = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    (out / "executed").mkdir(parents=True)
    copy_assets(out)
    exporter = HTMLExporter(
        template_name="hihpq",
        extra_template_basedirs=[str(HERE / "templates")],
        mathjax_url=f"mathjax/MathJax.js?config={MATHJAX_CONFIG}",
    )
    entries, report = [], {"mode": mode, "notebooks": {}, "thumbnails": {}}
    for src in srcs:
        stem = src.stem
        if executed is not None:
            path = executed / f"{stem}.ipynb"
            if not path.is_file():
                fail(
                    f"{path} is missing: execute the notebooks first (make test), or drop --executed"
                )
            nb = nbformat.read(path, as_version=4)
            if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
                fail(f"{path} has no outputs: it was not executed (nbmake --overwrite does it)")
        else:
            t = time.perf_counter()
            print(f"book: executing {src.name} ({mode} mode)", flush=True)
            nb = execute(src, out / "executed", fast=(mode == "fast"))
            print(f"book: {src.name} in {time.perf_counter() - t:.0f} s", flush=True)
        counts = prepare(nb)
        title, summary = title_and_summary(nb)
        thumb, report["thumbnails"][stem] = thumbnail(stem, nb, out)
        entries.append({"href": f"{stem}.html", "title": title, "summary": summary, "thumb": thumb})
        report["notebooks"][stem] = counts
        nbformat.write(nb, out / "executed" / f"{stem}.ipynb")
    for i, (src, e) in enumerate(zip(srcs, entries)):
        nb = nbformat.read(out / "executed" / f"{src.stem}.ipynb", as_version=4)
        nav = {
            "asset_prefix": "",
            "mode": mode,
            "prev": entries[i - 1] if i > 0 else None,
            "next": entries[i + 1] if i + 1 < len(entries) else None,
        }
        body, _ = exporter.from_notebook_node(nb, resources={"hihpq": nav})
        (out / e["href"]).write_text(body, encoding="utf-8")
    (out / "index.html").write_text(index_page(entries, mode), encoding="utf-8")
    shutil.rmtree(out / "executed")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    (out / "book.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "book")
    ap.add_argument("--mode", choices=("auto", "full", "fast"), default="auto")
    ap.add_argument(
        "--executed",
        type=Path,
        default=None,
        help="folder of executed .ipynb to convert instead of executing",
    )
    args = ap.parse_args(argv)
    report = build(args.out.resolve(), args.mode, args.executed)
    size = report["bytes"] / 2**20
    print(
        f"book: {len(report['notebooks'])} notebooks, {report['mode']} mode, "
        f"{report['seconds']} s, {size:.1f} MiB in {args.out}/index.html"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
