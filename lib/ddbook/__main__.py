"""Command line: ``python -m ddbook -h``.

Subcommands grow with the book; each runs a piece of work at a named profile and writes result
files, so that heavy runs need no notebook.
"""
from __future__ import annotations

import argparse
import sys
import time


def _cmd_info(args) -> int:
    from . import paths
    from .profiles import PROFILES, default_profile_name

    print(f"repository : {paths.repo_root()}")
    print(f"data dirs  : {', '.join(str(p) for p in paths.data_dirs())}")
    print(f"cache      : {paths.cache_dir()}")
    print(f"results    : {paths.results_root()}")
    print(f"profile    : {default_profile_name()} (from DDBOOK_PROFILE, else ci)")
    for p in PROFILES.values():
        print(f"  {p.name:6s} {p.budget:45s} {p.purpose}")
    return 0


def _cmd_data(args) -> int:
    from .data import load_dataset
    from .zca import cached_zca

    t0 = time.perf_counter()
    ds = load_dataset(args.dataset, source=args.source, download=args.download)
    print(f"{ds.name}: train {tuple(ds.train.images.shape)}, test {tuple(ds.test.images.shape)} "
          f"from {ds.source} ({ds.train.order} order) in {time.perf_counter() - t0:.1f} s")
    if args.zca:
        t0 = time.perf_counter()
        cached_zca(ds.train.images)
        print(f"ZCA (eps 0.1) fitted on the training set and cached in {time.perf_counter() - t0:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ddbook", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="where data, caches and results live; the profiles")
    info.set_defaults(run=_cmd_info)
    data = sub.add_parser("data", help="decode and cache a dataset (and optionally fit ZCA)")
    data.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"])
    data.add_argument("--source", default=None, help="a dataset file or folder (default: search)")
    data.add_argument("--download", action="store_true",
                      help="fetch torchvision's copy into <repo>/data if none is found")
    data.add_argument("--zca", action="store_true", help="also fit and cache ZCA whitening")
    data.set_defaults(run=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
