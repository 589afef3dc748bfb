"""Regenerate the README's picture: the demo's codewords on their Poincaré disks.

Run from the repository root after ``make demo`` (it reads ``runs/demo``)::

    .venv/bin/python notebooks/figures/make_figures.py

The notebooks' thumbnails are not committed: ``make book`` draws each from the figure of
the notebook's cell tagged ``thumbnail`` in the run it executes (``book/build.py``).
"""

from __future__ import annotations

import shutil

from hihpq_lib.utils.runtime import project_dir, runs_dir

OUT = project_dir() / "notebooks" / "figures"


def main() -> None:
    # the notebooks' thumbnails are not committed: make book draws them from the figures
    # of the notebooks it executes (the cells tagged "thumbnail"), so they show its run
    demo = runs_dir() / "demo"
    if (demo / "poincare_disks.png").is_file():
        shutil.copyfile(demo / "poincare_disks.png", OUT / "poincare_disks.png")
        print("copied", OUT / "poincare_disks.png")
    else:
        print(f"no {demo / 'poincare_disks.png'}: run make demo first")


if __name__ == "__main__":
    main()
