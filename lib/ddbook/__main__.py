"""Command line: ``python -m ddbook -h``.

Subcommands grow with the book; each runs a piece of work at a named profile and writes result
files, so that heavy runs need no notebook.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path


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


def _travel_copy(args) -> int:
    """``data --travel-copy DIR``: the compact JPEG archive and the CIFAR-10 score files in DIR."""
    import shutil

    from .data import write_travel_copy
    from .paths import scores_dirs

    t0 = time.perf_counter()
    dest = Path(args.travel_copy).expanduser()
    path = write_travel_copy(dest, args.dataset, args.source)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, checked against the zip) in "
          f"{time.perf_counter() - t0:.0f} s")
    tag = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}[args.dataset]
    found = next((d for d in scores_dirs() if d.is_dir() and any(d.glob(f"*_{tag}.*"))), None)
    if found is None:
        print(f"no published score files (*_{tag}.*) found: pages that need them will say so")
    else:
        (dest / "scores").mkdir(exist_ok=True)
        for f in sorted(found.glob(f"*_{tag}.*")):
            if (dest / "scores").resolve() != found.resolve():
                shutil.copyfile(f, dest / "scores" / f.name)
            print(f"copied {f.name} into {dest / 'scores'}")
    return 0


def _cmd_data(args) -> int:
    from .data import load_dataset
    from .zca import cached_zca

    if args.travel_copy:
        return _travel_copy(args)
    t0 = time.perf_counter()
    ds = load_dataset(args.dataset, source=args.source, download=args.download)
    print(f"{ds.name}: train {tuple(ds.train.images.shape)}, test {tuple(ds.test.images.shape)} "
          f"from {ds.source} ({ds.train.order} order) in {time.perf_counter() - t0:.1f} s")
    if args.zca:
        t0 = time.perf_counter()
        cached_zca(ds.train.images)
        print(f"ZCA (eps 0.1) fitted on the training set and cached in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_scores(args) -> int:
    from .figures.difficulty_scores import run_scores
    path = run_scores(args.profile)
    print(f"wrote {path}")
    return 0


def run_window(profile: str, ratio: float, beta: float, score: str = "cscore",
               reading: str = "class-fraction"):
    """Write the sliding-window subset of CIFAR-10 for (ratio, β): its indices and per-class
    statistics (window bounds, mean score inside the window vs the class mean)."""
    from .data import load_dataset
    from .results import Timer, save_result
    from .scores import load_published_scores
    from .selection import window_indices, window_start

    if not (math.isfinite(ratio) and 0 < ratio <= 1):
        raise ValueError(f"--ratio must be a number in (0, 1] (the subset's share of each class), "
                         f"got {ratio}")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"--beta must be a finite number >= 0 (the window's start), got {beta}")
    ds = load_dataset("cifar10")
    with Timer() as t:
        scores = load_published_scores(ds, score)
        n_class = len(ds.train.class_indices(0))
        ipc = round(ratio * n_class)
        start = window_start(beta, n_class, ipc, reading)
        idx = window_indices(scores, ds.train, ipc, beta, reading)
    values, labels = scores.values, ds.train.labels
    per_class = {ds.classes[c]: {"window_mean": float(values[idx[labels[idx] == c]].mean()),
                                 "class_mean": float(values[labels == c].mean())}
                 for c in range(ds.num_classes)}
    config = {"dataset": ds.name, "ratio": ratio, "beta": beta, "score": score, "reading": reading}
    name = f"selection/window_{score}_r{ratio:g}_b{beta:g}_{reading}"
    return save_result(name, profile, {"ipc": ipc, "start": start, "end": start + ipc,
                                       "per_class": per_class}, config, [], t.seconds,
                       arrays={"indices": idx})


def _cmd_window(args) -> int:
    print(f"wrote {run_window(args.profile, args.ratio, args.beta, args.score, args.reading)}")
    return 0


def _cmd_sweep_window(args) -> int:
    from .data import load_dataset
    from .figures.selmatch_fig3 import load, run_sweep, verdicts
    from .verdicts import render

    k, _, n = args.shard.partition("/")
    try:
        shard = (int(k), int(n or 1))
    except ValueError:
        raise ValueError(f"--shard must be k/n with whole numbers, e.g. 0/2; got {args.shard!r}")
    n = run_sweep(load_dataset("cifar10"), args.profile, shard=shard, reverse=args.reverse)
    loaded = load(args.profile)
    print(f"trained {n} networks; {loaded.describe(args.profile)}")
    print(render(verdicts(loaded)))
    return 0


def run_coverage_check(profile: str, ipcs=(10, 50, 250, 1000), seeds=(0, 1, 2), device=None):
    """Coverage of the test set by random subsets of growing size, in the feature network's space
    (our operationalisation, :mod:`ddbook.coverage`): a sanity check that coverage rises with size."""
    from .analysis import features
    from .coverage import coverage, coverage_radius, difficulty_groups, margin
    from .data import load_dataset, normalize
    from .feature_net import feature_net_config, feature_network
    from .results import Timer, save_result
    from .selection import random_indices
    from .train import predict
    from dataclasses import asdict

    ds = load_dataset("cifar10")
    config = feature_net_config(profile)
    with Timer() as t:
        model, test_acc = feature_network(ds, config, device)
        dev = next(model.parameters()).device
        x_train = normalize(ds.train.images, ds.mean, ds.std).to(dev)
        x_test = normalize(ds.test.images, ds.mean, ds.std).to(dev)
        f_train, f_test = features(model, x_train).cpu(), features(model, x_test).cpu()
        groups = difficulty_groups(margin(predict(model, x_test).cpu(), ds.test.labels))
        radius = coverage_radius(f_test, ds.test.labels, f_train, ds.train.labels)
        rows = []
        for ipc in ipcs:
            for seed in seeds:
                idx = random_indices(ds.train, ipc, seed)
                c = coverage(f_test, ds.test.labels, f_train[idx], ds.train.labels[idx], radius, groups)
                rows.append({"ipc": ipc, "seed": seed, "overall": c.overall, **c.groups})
    data = {"radius": radius, "feature_net_test_accuracy": test_acc, "rows": rows,
            "definition": "ours: same-class synthetic point within the median test-to-nearest-"
                          "same-class-train distance, penultimate features; easy/hard = halves "
                          "by the feature network's margin"}
    return save_result("coverage/random_subsets", profile, data,
                       {"feature_net": asdict(config), "ipcs": list(ipcs)}, list(seeds),
                       t.seconds, device)


def _cmd_coverage_check(args) -> int:
    from .results import load_result

    path = run_coverage_check(args.profile)
    rows = load_result("coverage/random_subsets", args.profile).data["rows"]
    for r in rows:
        print(f"IPC {r['ipc']:5d} seed {r['seed']}: overall {r['overall']:.3f}, easy {r['easy']:.3f}, "
              f"hard {r['hard']:.3f}")
    print(f"wrote {path}")
    return 0


def _cmd_distill(args) -> int:
    """Run a distillation preset at a profile (``ddbook.presets``) and write its results."""
    import json

    from .presets import ONE_OFF, PRESETS, run_preset

    if args.list:
        for name, p in PRESETS.items():
            print(f"{name:26s} {p.source}")
        return 0
    if args.preset is None:
        raise ValueError("give --preset NAME (see --list)")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set needs KEY=VALUE (e.g. --set syn_steps=10), got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    name = f"{ONE_OFF}/{args.name}" if args.name else None
    path, result = run_preset(args.preset, args.profile, device=args.device, overrides=overrides,
                              folder=args.folder, result_name=name, overwrite=args.overwrite)
    losses = result.history["loss"]
    print(f"{args.preset} at {args.profile}: {result.iterations_done} iterations, loss "
          f"{losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "no iterations run")
    if result.report:
        print(f"result at the declared iteration {result.report['iteration']}: "
              f"{result.report['mean']:.4f} ± {result.report['std']:.4f}")
    if result.best:
        print(f"best over checkpoints (optimistic) at iteration {result.best['iteration']}: "
              f"{result.best['mean']:.4f}")
    print(f"wrote {path}")
    return 0


def _add_distill_parser(sub) -> None:
    dist = sub.add_parser("distill", help="trajectory matching (MTT / DATM / SelMatch presets) at "
                          "a profile; resumable; writes results/<profile>/distill/one-off/"
                          "<preset>.json (never a page's result)")
    dist.add_argument("--preset", default=None, help="preset name, e.g. mtt-cifar10-ipc10 (--list)")
    dist.add_argument("--profile", default=None, help="ci | quick | gpu | paper")
    dist.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a setting, e.g. --set syn_steps=10 --set loop.iterations=50 "
                      "(values are JSON: 1e-5, true, null)")
    dist.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    dist.add_argument("--folder", default=None, help="checkpoint folder (default: in the cache)")
    dist.add_argument("--list", action="store_true", help="list the presets and their sources")
    dist.add_argument("--name", default=None, help="results name instead of the preset's "
                      "(results/<profile>/distill/one-off/NAME.json)")
    dist.add_argument("--overwrite", action="store_true", help="replace a one-off result of the "
                      "same name that was made from another configuration")
    dist.set_defaults(run=_cmd_distill)


def _cmd_reproduce(args) -> int:
    """Run the missing or stale pieces of a book page's figure (``ddbook.figures``)."""
    from .figures import as_profile, find, reproduce, reproduce_claimed
    if args.claim and args.shard:
        raise ValueError("--claim and --shard are two ways to share pages between processes: "
                         "use one (--claim: each process takes the next free piece)")
    if len(args.what) > 1 and not args.claim:
        raise ValueError(f"several pages ({', '.join(args.what)}) run in one command only with "
                         f"--claim; without it, run one page per command")
    for what in args.what:
        module, _ = find(what)
        for name, why in module.load(as_profile(args.profile)).stale.items():
            print(f"stale (made from another configuration; rerun where --only selects it): {why}")
    if args.claim:
        for path in reproduce_claimed(args.what, args.profile, device=args.device,
                                      only=args.only):
            print(f"wrote {path}")
        print(f"{', '.join(args.what)} at {args.profile}: this process found no free piece left "
              f"(pieces held by other processes finish there)")
        return 0
    what, = args.what
    shard = tuple(int(v) for v in args.shard.split("/")) if args.shard else None
    for path in reproduce(what, args.profile, device=args.device, only=args.only,
                          shard=shard):
        print(f"wrote {path}")
    print(f"{what} at {args.profile}: "
          + (f"shard {args.shard} complete (the other shards run their own pieces)" if shard
             else "complete"))
    return 0


def _add_reproduce_parser(sub) -> None:
    from .figures import names

    listing = "; ".join(f"{n}: {what}" for n, what in names().items())
    rep = sub.add_parser("reproduce", help="the runs behind a book page (resumable; one results "
                         "file per piece)", description=f"Figures: {listing}.")
    rep.add_argument("what", metavar="NAME", nargs="+", help=f"one of {', '.join(names())} "
                     "(several, in order, with --claim)")
    rep.add_argument("--profile", default=None, help="ci | quick | gpu | paper")
    rep.add_argument("--only", default=None, help="only the pieces whose name contains this, e.g. "
                     "ipc10, late, VGG11")
    rep.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    rep.add_argument("--shard", default=None, help="k/n: run every n-th piece from the k-th, so "
                     "n processes share the page (e.g. 0/2 and 1/2 on two cores; experts they "
                     "share are split between them)")
    rep.add_argument("--claim", action="store_true", help="share the pages with any other "
                     "process started the same way: each takes the next piece nobody holds (a "
                     "file lock per piece), page after page, so n processes on n cores stay busy "
                     "to the end, e.g. `reproduce selmatch-table1 dasm selmatch-coverage --claim &` "
                     "once per core")
    rep.set_defaults(run=_cmd_reproduce)


def _cmd_batch(args) -> int:
    """Several pages at a profile within a time budget, results packed into one archive
    (``ddbook.batch``; for a lent GPU)."""
    from .batch import run_batch

    runs = run_batch(args.pages, args.profile, Path(args.out), args.budget, device=args.device)
    for r in runs:
        what = r.page + (f":{r.only}" if r.only else "")
        print(f"{what}: {r.status}" + (f" after {r.seconds:.0f} s" if r.seconds else "")
              + (f" ({r.detail})" if r.detail else ""))
    print(f"wrote {args.out}/results-{args.profile}.tar.gz and {args.out}/batch.json")
    return 0 if all(r.status == "complete" for r in runs) else 1


def _cmd_unpack(args) -> int:
    """Check a batch's results archive and write its files under results/."""
    from .batch import unpack
    from .paths import results_root

    written = unpack(Path(args.archive))
    print(f"unpacked {len(written)} files under {results_root()} (each replaced whole; "
          f"`git status results/` shows them)")
    return 0


def _add_batch_parsers(sub) -> None:
    bat = sub.add_parser("batch", help="several pages at a profile within a time budget, their "
                         "results packed into one archive (for a lent GPU: one command, one "
                         "folder to bring back)",
                         description="Runs `reproduce NAME --profile P` for each page in turn; "
                         "stops starting pages when under a minute of the budget is left and "
                         "interrupts one that would overrun (its finished pieces are kept). After "
                         "every page it rewrites OUT/results-<profile>.tar.gz and OUT/batch.json. "
                         "Without a git checkout set DDBOOK_SOURCE_COMMIT=<sha> so that the results "
                         "name their commit; `python -m ddbook unpack` checks it here.")
    bat.add_argument("pages", metavar="PAGE", nargs="+", help="a figure NAME, or NAME:ONLY to "
                     "run only its pieces whose name contains ONLY")
    bat.add_argument("--profile", default=None, help="ci | quick | gpu | paper")
    bat.add_argument("--budget", type=float, required=True, help="seconds for the whole batch")
    bat.add_argument("--out", required=True, help="folder for the archive, batch.json and the log")
    bat.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    bat.set_defaults(run=_cmd_batch)
    unp = sub.add_parser("unpack", help="check a batch's results archive and write its files "
                         "under results/ (each replaced whole)")
    unp.add_argument("archive", metavar="ARCHIVE", help="results-<profile>.tar.gz from `batch`")
    unp.set_defaults(run=_cmd_unpack)


def _cmd_notebook(args) -> int:
    """Execute a page's notebook (or every page's, ``--all``) at a profile with papermill
    (``ddbook.rerun``)."""
    from .rerun import execute, execute_all

    profile = args.profile
    if args.all:
        if args.page or args.p:
            raise ValueError("--all executes every page with its default parameters: give "
                             "either PAGE [-p NAME VALUE] or --all")
        try:
            execute_all(profile, args.out, args.jobs)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    if not args.page:
        raise ValueError("give a PAGE (python -m ddbook notebook --help lists them) or --all")
    path = execute(args.page, profile, args.p or [], args.out)
    print(f"{args.page} at {profile}: wrote {path} (`make html` renders it in the book)")
    return 0


def _add_notebook_parser(sub) -> None:
    from .rerun import help_text

    nb = sub.add_parser("notebook", help="execute a page's notebook (or --all) at a profile with "
                        "papermill (-p NAME VALUE sets a parameter; --help lists them)",
                        description="Execute notebooks/<page>.py (jupytext, papermill) and write "
                        "the executed notebook to _build/executed/<notebook>.<profile>.ipynb "
                        "($DDBOOK_EXECUTED overrides the folder), where the book picks it up: "
                        "`make html` renders, for each page, the newest executed notebook of its "
                        "current source.",
                        epilog=help_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    nb.add_argument("page", metavar="PAGE", nargs="?", default=None,
                    help="a figure NAME or a notebook name (below)")
    nb.add_argument("--all", action="store_true", help="execute every page (default parameters)")
    nb.add_argument("--jobs", type=int, default=1, help="with --all: pages executed at once "
                    "(default 1)")
    nb.add_argument("--profile", default=None, help="ci | quick | gpu | paper (default: "
                    "$DDBOOK_PROFILE, else ci)")
    nb.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="set a parameter of the notebook (repeatable)")
    nb.add_argument("--out", default=None, help="folder for the executed notebooks (default "
                    "$DDBOOK_EXECUTED, else _build/executed)")
    nb.set_defaults(run=_cmd_notebook)


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
    data.add_argument("--travel-copy", metavar="DIR", default=None, help="write the JPEG archive "
                      "as one xz tar (~18 MB, the same bytes) and the published score files into "
                      "DIR, e.g. data/ (git-ignored), to carry to a lent GPU")
    data.set_defaults(run=_cmd_data)
    scores = sub.add_parser("scores", help="compute our EL2N and forgetting scores (resumable)")
    scores.add_argument("--profile", default=None, help="ci | quick | gpu | paper (default: "
                        "$DDBOOK_PROFILE, else ci)")
    scores.set_defaults(run=_cmd_scores)
    win = sub.add_parser("window", help="the sliding-window subset for a subset ratio and beta")
    win.add_argument("--ratio", type=float, required=True, help="subset ratio, e.g. 0.05")
    win.add_argument("--beta", type=float, required=True, help="window start (see --reading)")
    win.add_argument("--score", default="cscore", choices=["cscore", "forgetting"])
    win.add_argument("--reading", default="class-fraction", choices=["class-fraction", "ipc-offset"],
                     help="start = floor(beta * class size) (paper) or int(IPC * beta) (code)")
    win.add_argument("--profile", default=None, help="results folder (default: $DDBOOK_PROFILE or ci)")
    win.set_defaults(run=_cmd_window)
    sweep = sub.add_parser("sweep-window", help="SelMatch Fig. 3: the sliding-window sweep "
                           "(one results file per point; resumable)")
    sweep.add_argument("--profile", default=None, help="ci | quick | gpu | paper")
    sweep.add_argument("--shard", default="0/1", help="k/n: run every n-th point from the k-th, "
                       "so n processes can share the sweep (e.g. 0/2 and 1/2 on two cores)")
    sweep.add_argument("--reverse", action="store_true", help="run the points from the last: a "
                       "second process started with --reverse shares the sweep from the other end")
    sweep.set_defaults(run=_cmd_sweep_window)
    cov = sub.add_parser("coverage-check", help="coverage of the test set by random subsets of "
                         "growing size (our coverage definition; a sanity check)")
    cov.add_argument("--profile", default=None, help="ci | quick | gpu | paper")
    cov.set_defaults(run=_cmd_coverage_check)
    _add_distill_parser(sub)
    _add_reproduce_parser(sub)
    _add_notebook_parser(sub)
    _add_batch_parsers(sub)
    return parser


_WRITES = {"scores", "window", "sweep-window", "coverage-check", "distill", "reproduce", "notebook",
           "batch"}


def _check_args(args) -> None:
    """Checks of argument values that argparse cannot make, before any work."""
    if getattr(args, "shard", None) is not None:
        k, _, n = args.shard.partition("/")
        if not (k.strip().isdigit() and n.strip().isdigit() and int(k) < int(n)):
            raise ValueError(f"--shard must be k/n with whole numbers 0 <= k < n (e.g. 0/2 and "
                             f"1/2 for two processes), got {args.shard!r}")


def _one_line(message: str) -> str:
    return message.replace(":\n  - ", ": ").replace("\n  - ", ", ").replace("\n", "; ")


def main(argv: list[str] | None = None) -> int:
    """Run a command. A user error prints one line ``error: ...`` (exit 2); Ctrl-C prints one
    line saying where the run stopped and how to resume (exit 130)."""
    args = build_parser().parse_args(argv)
    from .train import ACTIVE
    ACTIVE.clear()
    try:
        if getattr(args, "profile", "unset") is None:
            from .profiles import default_profile_name
            args.profile = default_profile_name()
        _check_args(args)
        if args.command in _WRITES and not getattr(args, "list", False):
            from .profiles import get_profile
            from .results import check_writable
            get_profile(args.profile)
            check_writable(args.profile)      # a read-only results folder: before the work
        return args.run(args)
    except KeyboardInterrupt:
        from .train import where_stopped
        where = where_stopped()
        command = " ".join(["python -m ddbook", *(argv if argv is not None else sys.argv[1:])])
        print(f"interrupted{f' in {where}' if where else ''}; finished pieces and the last "
              f"checkpoint are kept: rerun `{command}` to resume from there", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
