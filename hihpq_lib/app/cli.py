"""The ``hihpq`` command line.

::

    hihpq prepare [CONFIG] [--set key=value ...] [--data PATH] [--query-data FOLDER]
                  [--superclasses FILE | --hierarchy FILE]
    hihpq train CONFIG [--set key=value ...] [--out DIR] [--resume] [--data PATH]
                [--query-data FOLDER] [--superclasses FILE | --hierarchy FILE]
    hihpq evaluate RUN [--json] [--data PATH] [--query-data FOLDER] [--hierarchy FILE]
                   [--hierarchy-levels LEVELS]
    hihpq search RUN IMAGE [--k N]

``train``'s report, ``evaluate`` and ``search`` restore a run with its own backbone (frozen,
tail-trained or fine-tuned) and score it one way (:mod:`hihpq_lib.app.scoring`).
    hihpq demo [--quick] [--out DIR] [--data PATH]

Errors a user can fix (unknown config key or a bad value, malformed YAML, bad code length,
unknown dataset or backbone, missing data or weights, a corrupt image, archive or checkpoint,
a non-empty run folder, a folder without write permission, a file where ``--out`` should be)
print one line ``hihpq: error: ...`` naming the file and the fix, and exit 2. See
``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _add_config_args(p: argparse.ArgumentParser, config_required: bool) -> None:
    if config_required:
        p.add_argument("config", help="YAML config file (see configs/)")
    else:
        p.add_argument(
            "config",
            nargs="?",
            default=None,
            help="YAML config file (default: the CIFAR-10 CPU profile; with --data FOLDER of "
            "class sub-folders, the folder default configs/cpu/cpu_folder_auto_32bits.yaml, "
            "its recipe chosen on the folder's validation queries)",
        )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set epochs=10",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="dataset source: a CIFAR-10 root, image tree or .tar.gz; or, with "
        "`dataset: folder` (configs/cpu/cpu_folder_32bits.yaml or --set dataset=folder), "
        "an image folder PATH/<class>/<image>",
    )
    _add_folder_args(p)


def _add_folder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--query-data",
        default=None,
        metavar="FOLDER",
        help="image folders only: a second folder with the same class sub-folders (e.g. an "
        "official val/); all its images are the test queries, --data is database + training "
        "set (config key query_data)",
    )
    p.add_argument(
        "--superclasses",
        default=None,
        metavar="FILE",
        help="two-level hierarchy: 'class superclass' lines or a JSON object (config key "
        "superclass_file); adds superclass mAP and ARI/NMI",
    )
    p.add_argument(
        "--hierarchy",
        default=None,
        metavar="FILE",
        help="multi-level hierarchy: JSON class -> ancestor chain, root first (a list, or "
        '{"ancestors": [...]}, e.g. WordNet\'s); mAP and ARI/NMI at each depth of '
        "hierarchy_levels (default auto) (config key hierarchy_file)",
    )


_FOLDER_EPILOG = """image folders:
  hihpq train --data FOLDER
  hihpq train --data DATA/train --query-data DATA/val \\
      --hierarchy DATA/hierarchy.json --set "hierarchy_levels=[3, 5]"
With no config, a folder of class sub-folders gets the folder default
(configs/cpu/cpu_folder_auto_32bits.yaml): each candidate recipe trains a few epochs and
the one the folder's validation queries prefer is finished (docs/folders.md).
A config with `dataset: cifar10` given a folder that is not CIFAR-10 stops and says so:
add --set dataset=folder or use a folder profile. Without --query-data, 10% of the
smallest class per class are the test queries and the rest is database and training set;
splits.json records the rule. num_clusters: auto picks [4C, 2C, C] for C classes (capped
at a tenth of the training images). README, "Your own image folder".
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hihpq", description="HiHPQ: hierarchical hyperbolic product quantization"
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "prepare",
        help="load data, make splits, cache frozen features and the augmentation bank",
        epilog=_FOLDER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(p, config_required=False)
    p = sub.add_parser(
        "train",
        help="train and evaluate a model (writes a run folder)",
        epilog=_FOLDER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(p, config_required=False)
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the run folder's checkpoint"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in a non-empty run folder (default: refuse it)",
    )
    p = sub.add_parser("evaluate", help="mAP of a trained run on its test queries")
    p.add_argument("run", help="run folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--data",
        default=None,
        help="dataset source (default: the locally configured one; a path stored in "
        "the run folder is never followed)",
    )
    _add_folder_args(p)
    p.add_argument(
        "--hierarchy-levels",
        default=None,
        metavar="LEVELS",
        help="depths of --hierarchy to report, e.g. 3,5, or auto (default: the run's "
        "hierarchy_levels)",
    )
    p = sub.add_parser("search", help="query a trained run's index with an image file")
    p.add_argument("run", help="run folder")
    p.add_argument("image", help="image file (any format PIL reads)")
    p.add_argument("--k", type=int, default=10, help="number of results")
    p = sub.add_parser("demo", help="the main job: CIFAR-10 protocol II, 32 bits, CPU profile")
    p.add_argument("--quick", action="store_true", help="a small subset and few epochs (CI)")
    p.add_argument("--out", default=None, help="output folder (default: runs/demo)")
    p.add_argument("--data", default=None, help="CIFAR-10 source")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    return ap


def _config(args):
    from hihpq_lib.data import looks_like_image_folder
    from hihpq_lib.learning.config import folder_config, load_config

    overrides = list(args.overrides)
    for opt, key in _PATH_OPTIONS.items():
        if getattr(args, opt, None):
            overrides.append(f"{key}={getattr(args, opt)}")
    data = getattr(args, "data", None)
    sets_dataset = any(o.split("=", 1)[0].strip() == "dataset" for o in args.overrides)
    if args.config is None and data and not sets_dataset and looks_like_image_folder(data):
        # an image folder and no config: the folder default, its recipe chosen on the
        # folder's own validation queries (docs/folders.md)
        return folder_config(overrides)
    return load_config(args.config, overrides)


#: CLI options that set a path config key.
_PATH_OPTIONS = {
    "data": "data",
    "query_data": "query_data",
    "superclasses": "superclass_file",
    "hierarchy": "hierarchy_file",
}


def _cmd_prepare(args) -> int:
    from hihpq_lib.app.prepare import prepare_for
    from hihpq_lib.utils.timing import peak_rss_mb

    prep = prepare_for(_config(args))
    print(f"splits: {prep.splits.sizes()}")
    if prep.mode == "tail":  # the trunk's maps, not pooled features (docs/adapted_tail.md)
        print(f"trunk maps {prep.maps.shape}, bank maps {prep.bank_maps.shape} (float16)")
    elif prep.mode == "bank":
        print(f"features {tuple(prep.feats.shape)}, bank {tuple(prep.bank.shape)}")
    else:  # online: nothing is cached, the backbone runs on the images during training
        print("online augmentation: nothing to cache (the backbone runs during training)")
    for name, sec in prep.timer.seconds.items():
        print(f"  {name:<20} {sec:8.1f} s")
    print(f"peak memory {peak_rss_mb():.0f} MB")
    return 0


def _print_results(res: dict) -> None:
    print(f"dataset                      {res.get('dataset')} ({res.get('split')})")
    keys = [k for k in res if k.startswith("map@") and not isinstance(res[k], dict)]
    for k in keys:
        print(f"{k:<28} {res[k]:.4f}")
    print(
        f"validation-selected epoch     {res['val_selected_epoch']} (val mAP {res['val_map_best']:.4f})"
    )
    if res.get("recipe"):  # recipe: auto, chosen on the validation queries
        block = res["recipe"]
        tried = ", ".join(f"{n} {c['val_map_best']:.4f}" for n, c in block["candidates"].items())
        print(
            f"recipe                        {block['chosen']} (validation mAP after "
            f"{block['screen_epochs']} epochs: {tried})"
        )
    _print_refine(res)
    _print_levels(res)
    _print_baselines(res)
    for name, sec in res.get("stage_seconds", {}).items():
        print(f"  {name:<24} {sec:8.1f} s")
    if "peak_rss_mb" in res:
        print(f"peak memory {res['peak_rss_mb']:.0f} MB")


def _print_refine(res: dict) -> None:
    """``codebook_refine``: each saved model's validation mAP before and after."""
    for which, rec in (res.get("codebook_refine") or {}).items():
        if rec is None:
            continue
        if rec.get("skipped"):
            what = f"skipped ({rec['skipped']})"
        else:
            verdict = "kept" if rec["kept"] else "not kept: validation fell"
            what = (
                f"{rec['iterations']} Lloyd iterations, val mAP {rec['val_map_before']:.4f} -> "
                f"{rec['val_map_after']:.4f}, {verdict}"
            )
        print(f"codebook refinement ({which.replace('_', '-')}) {what}")


def _print_baselines(res: dict) -> None:
    """The trained model beside the untrained baselines on the same frozen features
    (``baselines``); its column is headed by what it is (HiHPQ, or its Euclidean twin)."""
    base = res.get("baselines")
    if not base:
        return
    mine = next((v for k, v in res.items() if k.endswith("_levels_val_selected")), {})
    geometry = res.get("geometry") or "lorentz"
    label = "HiHPQ" if geometry == "lorentz" else geometry.capitalize()  # a 10-wide column
    cols = [(label, mine)] + [(n, base[n]) for n in ("float", "faiss_pq") if base.get(n)]
    print("beside the untrained baselines on the same features (mAP, validation-selected):")
    print("  " + f"{'level':<14}" + "".join(f"{name:>10}" for name, _ in cols))
    for level in mine:
        print(
            "  " + f"{level:<14}" + "".join(f"{c.get(level, float('nan')):>10.4f}" for _, c in cols)
        )
    if base.get("faiss_pq") is None:
        print('  (faiss PQ: not run; needs faiss, pip install "hihpq[baselines]", and 256 images)')
    if base.get("below"):
        from hihpq_lib.app.scoring import method_name

        print(
            f"  warning: {method_name(geometry)} is below a baseline: " + "; ".join(base["below"])
        )


def _cmd_train(args) -> int:
    from hihpq_lib.app.pipeline import run_experiment, run_folder
    from hihpq_lib.learning.config import ConfigError

    cfg = _config(args)
    if args.config is None and cfg.dataset != "folder":
        raise ConfigError(
            "hihpq train needs a config (e.g. configs/cpu/cpu_cifar10_ii_32bits.yaml) or "
            "--data FOLDER, a folder of class sub-folders (the folder default then runs)"
        )
    res = run_experiment(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"run folder: {run_folder(cfg, args.out).resolve()}")
    _print_results(res)
    return 0


def _cmd_evaluate(args) -> int:
    import dataclasses

    from hihpq_lib.app.prepare import prepare_for
    from hihpq_lib.app.scoring import (
        evaluate_run,
        hierarchy_results,
        pseudo_hierarchy_report,
        restore_run,
    )
    from hihpq_lib.data import DatasetNotFoundError, load_splits

    run = Path(args.run)
    trained = restore_run(run)
    cfg = trained.cfg
    # A run folder may come from someone else: the data paths stored in it are never
    # followed (a hostile folder could run code when read). --data, or the local setup.
    stored = cfg.data
    if args.data is None and cfg.dataset != "cifar10" and stored:
        raise DatasetNotFoundError(
            f"{run} was trained on {cfg.dataset} data at {stored}; a path stored in a run "
            "folder is not followed: pass --data PATH (your copy of that dataset)"
        )
    if cfg.query_data and not args.query_data:
        raise DatasetNotFoundError(
            f"{run} took its queries from the folder {cfg.query_data}; a path stored in a run "
            "folder is not followed: pass --query-data FOLDER (your copy of it)"
        )
    cfg = dataclasses.replace(
        cfg,
        data=args.data,
        query_data=args.query_data,
        superclass_file=args.superclasses,
        hierarchy_file=args.hierarchy,
        hierarchy_levels=_levels_arg(args.hierarchy_levels, cfg.hierarchy_levels),
    )
    if stored and stored != args.data and not args.json:
        print(
            f"note: the run was trained on data at {stored}; evaluating on "
            f"{args.data or 'the locally configured CIFAR-10'}",
            file=sys.stderr,
        )
    # the run's mode (bank, tail, online), its own splits and its own backbone states: as
    # train scored it
    saved = run / "splits.json"
    splits = load_splits(saved) if saved.is_file() else None
    prep = prepare_for(cfg, progress=not args.json, splits=splits)
    scores = evaluate_run(trained, prep)
    res = {
        "run": str(run),
        "dataset": prep.dataset.display_name,
        f"map@{cfg.topk}_final": scores.final["class"],
        f"map@{cfg.topk}_val_selected": scores.best["class"],
        **hierarchy_results(prep, cfg, scores.final, scores.best),
        "pseudo_hierarchy": pseudo_hierarchy_report(run, prep, trained.run_id),
    }
    if args.json:
        print(json.dumps(res))
    else:
        for k in ("run", "dataset", f"map@{cfg.topk}_final", f"map@{cfg.topk}_val_selected"):
            v = res[k]
            print(f"{k:<28} {v if isinstance(v, str) else f'{v:.4f}'}")
        _print_levels(res)
    return 0


def _levels_arg(text: str | None, default):
    """``--hierarchy-levels``: ``auto`` or comma-separated depths (``3,5``)."""
    if text is None:
        return default
    if text.strip().lower() == "auto":
        return "auto"
    try:
        levels = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        levels = []
    if not levels or min(levels) < 0:
        raise ValueError(
            f"--hierarchy-levels must be auto or depths >= 0 separated by commas (e.g. 3,5), "
            f"got {text!r}"
        )
    return levels


def _print_levels(res: dict) -> None:
    """Per-level mAP and the pseudo hierarchy's ARI/NMI (when there is a hierarchy)."""
    key = next((k for k in res if k.endswith("_levels_val_selected")), None)
    if key is None or len(res[key]) < 2:
        return
    nodes = res.get("hierarchy", {}).get("levels", {})
    print(f"{key.split('_')[0]} by level (validation-selected model):")
    for level, value in res[key].items():
        print(f"  {level:<14} {nodes.get(level, '?'):>6} nodes  {value:.4f}")
    pseudo = res.get("pseudo_hierarchy")
    if pseudo:
        print(
            f"pseudo hierarchy (Ward clusters of epoch {pseudo['epoch']}) vs true levels, ARI / NMI:"
        )
        for level, rows in pseudo["agreement"].items():
            cells = "  ".join(f"{r['n_clusters']}: {r['ari']:.3f} / {r['nmi']:.3f}" for r in rows)
            print(f"  {level:<14} {cells}")


def _cmd_search(args) -> int:
    from hihpq_lib.app.scoring import restore_run, search_files
    from hihpq_lib.data import read_image_file

    read_image_file(args.image)  # a corrupt or missing image fails first, by name
    # the run's final model and its own backbone (trained or frozen), the index's run
    run = restore_run(args.run)
    dist, _, ids = search_files(run, [args.image], args.k)
    print(f"top {args.k} of {run.n_database} database images for {args.image}:")
    for rank, (d, i) in enumerate(zip(dist[0].tolist(), ids[0].tolist()), 1):
        print(f"{rank:>3}  dataset index {int(i):>6}  distance {d:.4f}")
    return 0


def _cmd_demo(args) -> int:
    from hihpq_lib.app.demo import run_demo

    run_demo(
        out_dir=args.out,
        quick=args.quick,
        data=args.data,
        overrides=args.overrides,
        overwrite=args.overwrite,
    )
    return 0


COMMANDS = {
    "prepare": _cmd_prepare,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "search": _cmd_search,
    "demo": _cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from hihpq_lib.data import CorruptImageError, DatasetNotFoundError
    from hihpq_lib.data.backbones import MissingWeightsError
    from hihpq_lib.learning.config import ConfigError

    try:
        return COMMANDS[args.command](args)
    except (
        ConfigError,
        DatasetNotFoundError,
        MissingWeightsError,
        CorruptImageError,
        FileNotFoundError,
        ValueError,
    ) as err:
        return _error(_message(err))
    except OSError as err:  # permissions, a file where a folder should be, disk full...
        return _error(_os_message(err))


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and str(err).startswith("[Errno"):
        return _os_message(err)  # a bare OS error (FileNotFoundError from open...)
    return str(err).strip() or type(err).__name__


def _os_message(err: OSError) -> str:
    name = err.filename or "a file"
    if err.filename2:
        name = f"{err.filename} -> {err.filename2}"
    text = str(err)
    if not text.startswith("[Errno"):
        return text  # already one of ours, naming the file and the fix
    fixes = {
        PermissionError: "check its permissions, or point --out / HIHPQ_RUNS_DIR / "
        "HIHPQ_DATA_DIR / HIHPQ_CACHE_DIR at a folder you can write",
        FileExistsError: "a file stands where a folder is needed; move it or choose "
        "another path (e.g. --out)",
        IsADirectoryError: "a folder stands where a file is needed; pass a file",
        NotADirectoryError: "a file stands where a folder is needed; choose another path",
    }
    fix = next((f for t, f in fixes.items() if isinstance(err, t)), "check the path")
    if err.errno == 28:  # ENOSPC
        fix = "free disk space or point HIHPQ_DATA_DIR / HIHPQ_RUNS_DIR elsewhere"
    return f"{name}: {err.strerror or type(err).__name__}; {fix}"


def _error(text: str) -> int:
    msg = text.splitlines() or ["error"]
    print(f"hihpq: error: {msg[0]}", file=sys.stderr)
    for line in msg[1:]:
        print(f"  {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
