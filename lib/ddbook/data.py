"""CIFAR-10 / CIFAR-100 as uint8 tensors: found, decoded once, cached, split per class.

Sources, tried in order (``paths.data_dirs()``): ``$DDBOOK_DATA`` (a file or a folder) alone when it
is set, else ``<repo>/data`` and ``../shared/data``. In each folder we look for

- ``cifar10-jpeg.zip``: CIFAR-10 as JPEG files, ``{train,test}/<class>/NNNN.jpg``, where ``NNNN`` is
  the image's rank within its class in the original CIFAR order (the shared data of this project);
- ``cifar10-jpeg.tar.xz``: the same JPEG files, byte for byte, in one xz-compressed tar (the
  JPEGs share their 609-byte header tables, which a solid archive stores about once: ~18 MB
  instead of 62, small enough to travel to a lent GPU with the working tree;
  :func:`write_travel_copy`, ``python -m ddbook data --travel-copy DIR``);
- ``cifar-10-batches-py/`` or ``cifar-100-python/``: torchvision's own on-disk layout (pickles).

The decoded tensors are cached in ``paths.cache_dir()`` under a key of the source's contents, so a
second load reads one file. Images are kept as uint8 ``(N, 3, H, W)``; :func:`normalize` turns them
into the float inputs the networks see. ZCA whitening lives in :mod:`ddbook.zca`.

Order. The JPEG zip yields a **class-sorted** order (class 0's images in their original order, then
class 1's, ...); torchvision's layout yields the **original** order. Each split records, for every
example, its rank within its class in the original order (``class_rank``), which is what the
published score files need to be mapped onto either order (:mod:`ddbook.scores`).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import paths

__all__ = [
    "Split", "Dataset", "DataNotFoundError", "CorruptDataError", "SPECS",
    "load_dataset", "normalize", "denormalize",
]


class DataNotFoundError(FileNotFoundError):
    """No copy of a dataset was found; the message lists every place looked at and the fix."""


class CorruptDataError(ValueError):
    """A dataset file exists but cannot be read, or holds the wrong number of images."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: tuple[str, ...]
    mean: tuple[float, float, float]   # per-channel mean of [0, 1] pixels (the papers' constants)
    std: tuple[float, float, float]
    n_train: int
    n_test: int
    zip_name: str | None               # JPEG archive in this project's layout, if any
    torchvision_dir: str               # folder name of torchvision's layout


_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # papers.md §1.2
SPECS = {
    "cifar10": DatasetSpec(
        "cifar10",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        _CIFAR_MEAN, _CIFAR_STD, 50_000, 10_000, "cifar10-jpeg.zip", "cifar-10-batches-py"),
    # CIFAR-100 class names are read from torchvision's meta file.
    "cifar100": DatasetSpec("cifar100", (), _CIFAR_MEAN, _CIFAR_STD, 50_000, 10_000,
                            None, "cifar-100-python"),
}


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset held in memory.

    images: uint8 ``(N, 3, H, W)``; labels: int64 ``(N,)``; class_rank: int64 ``(N,)``, the rank of each
    example within its class in the dataset's original order; ``order`` is ``"original"`` or
    ``"class-sorted"``.
    """
    images: torch.Tensor
    labels: torch.Tensor
    class_rank: torch.Tensor
    order: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def class_indices(self, c: int) -> torch.Tensor:
        """Indices (into this split) of class ``c``'s examples, in original within-class order."""
        idx = torch.nonzero(self.labels == c).flatten()
        return idx[torch.argsort(self.class_rank[idx])]

    def per_class_indices(self) -> list[torch.Tensor]:
        return [self.class_indices(c) for c in range(self.num_classes)]

    def subset(self, index: torch.Tensor) -> "Split":
        """The examples at ``index`` (class ranks are kept, so scores still map)."""
        return Split(self.images[index], self.labels[index], self.class_rank[index], "subset")

    def take_per_class(self, n: int, seed: int) -> "Split":
        """A class-balanced random subset of ``n`` examples per class, drawn from ``seed``."""
        g = torch.Generator().manual_seed(seed)
        picks = []
        for c, idx in enumerate(self.per_class_indices()):
            if n > len(idx):
                raise ValueError(f"asked for {n} images of class {c}, which has only {len(idx)}; "
                                 f"use at most {len(idx)} per class")
            picks.append(idx[torch.randperm(len(idx), generator=g)[:n]].sort().values)
        return self.subset(torch.cat(picks))


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    classes: tuple[str, ...]
    train: Split
    test: Split
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


# ----------------------------------------------------------------------------------------------
# finding and decoding


def _candidates(spec: DatasetSpec, source: str | os.PathLike | None) -> list[Path]:
    """Every path at which a copy of ``spec`` could be, most specific first."""
    roots = [Path(source).expanduser()] if source is not None else paths.data_dirs()
    out = []
    for root in roots:
        if root.suffix == ".zip" or root.name.endswith(TRAVEL_SUFFIX) \
                or root.name == spec.torchvision_dir:
            out.append(root)
            continue
        if spec.zip_name:
            out += [root / spec.zip_name, root / travel_name(spec)]
        out.append(root / spec.torchvision_dir)
    return out


TRAVEL_SUFFIX = ".tar.xz"


def travel_name(spec: DatasetSpec) -> str:
    """``cifar10-jpeg.tar.xz``: the file name of the compact copy of ``spec.zip_name``."""
    return spec.zip_name.removesuffix(".zip") + TRAVEL_SUFFIX


def _zip_members(path: Path) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CorruptDataError(f"{path} is not a readable zip archive ({e}). Fix: replace it with an "
                               f"intact copy of cifar10-jpeg.zip (62 MB) or set DDBOOK_DATA.") from e
    with archive:
        return {n: archive.read(n) for n in archive.namelist() if n.endswith(".jpg")}


def _tar_members(path: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(path, "r:xz") as tar:
            return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()
                    and m.name.endswith(".jpg")}
    except (tarfile.TarError, OSError, EOFError) as e:   # lzma errors are OSError / EOFError
        raise CorruptDataError(f"{path} is not a readable xz-compressed tar ({e}). Fix: write it "
                               f"again with `python -m ddbook data --travel-copy DIR`, or use the "
                               f"zip.") from e


def write_travel_copy(dest: str | os.PathLike, name: str = "cifar10",
                      source: str | os.PathLike | None = None) -> Path:
    """Write ``<dest>/cifar10-jpeg.tar.xz``: every JPEG of the zip found for ``name`` (or of
    ``source``), byte for byte, in one xz tar (deterministic: sorted names, zero times and
    owners), checked member by member against the zip before it is renamed into place."""
    spec = SPECS[name]
    if not spec.zip_name:
        raise ValueError(f"{name} has no JPEG archive to make a travel copy of")
    _locate(spec, source)                  # no copy at all: the usual error, with the fix
    zip_path = next((p for p in _candidates(spec, source) if p.suffix == ".zip" and p.exists()),
                    None)
    if zip_path is None:
        raise DataNotFoundError(f"the travel copy is made from {spec.zip_name}, and none was found "
                                f"(looked at {', '.join(map(str, _candidates(spec, source)))}). "
                                f"Fix: point --source (or DDBOOK_DATA) at the zip")
    members = _zip_members(zip_path)
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / travel_name(spec)
    tmp = target.with_name(f".{target.name}.tmp")
    with tarfile.open(tmp, "w:xz", preset=6, format=tarfile.USTAR_FORMAT) as tar:
        for n in sorted(members):
            info = tarfile.TarInfo(n)
            info.size, info.mtime, info.mode = len(members[n]), 0, 0o444
            tar.addfile(info, io.BytesIO(members[n]))
    if _tar_members(tmp) != members:
        tmp.unlink()
        raise CorruptDataError(f"the travel copy of {zip_path} did not read back equal; nothing "
                               f"written")
    os.replace(tmp, target)
    return target


def _locate(spec: DatasetSpec, source) -> Path:
    try:
        tried = _candidates(spec, source)
    except paths.PathSettingError as e:   # DDBOOK_DATA names nothing
        raise DataNotFoundError(f"{spec.name}: {e}") from None
    for path in tried:
        if path.exists():
            return path
    lines = "\n".join(f"  - {p}" for p in tried)
    env = paths.env_path("DDBOOK_DATA")
    if source is None and env is not None:
        raise DataNotFoundError(
            f"{spec.name}: DDBOOK_DATA={env} holds no copy of it. Looked at:\n{lines}\n"
            f"Fix: point DDBOOK_DATA at {spec.zip_name or spec.torchvision_dir} (or a folder "
            f"holding it, or torchvision's {spec.torchvision_dir}/), or unset DDBOOK_DATA to use "
            f"the default places ({', '.join(str(p) for p in paths.default_data_dirs())})")
    raise DataNotFoundError(
        f"{spec.name}: no copy found. Looked at:\n{lines}\n"
        f"Fix: put {spec.zip_name or spec.torchvision_dir} in one of those places, or point the "
        f"environment variable DDBOOK_DATA at the file or at a folder that holds it. A torchvision "
        f"copy ({spec.torchvision_dir}/) works too; load_dataset(..., download=True) fetches one.")


def _fingerprint(path: Path) -> str:
    """A content key for the cache: the zip's bytes, or the names/sizes/mtimes of a folder's files."""
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    else:
        for p in sorted(path.iterdir()):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _decode_zip(spec: DatasetSpec, path: Path) -> dict[str, np.ndarray]:
    """Decode the JPEG archive (the zip, or its travel copy: the same bytes, the same arrays)."""
    from PIL import Image

    files = _tar_members(path) if path.name.endswith(TRAVEL_SUFFIX) else _zip_members(path)
    out = {}
    names = list(files)
    for split, expected in (("train", spec.n_train), ("test", spec.n_test)):
        members = sorted((n for n in names if n.startswith(split + "/")),
                         key=lambda n: (spec.classes.index(n.split("/")[1]), n))
        if len(members) != expected:
            raise CorruptDataError(f"{path}: {len(members)} {split} images, expected {expected}. "
                                   f"Fix: replace the archive with an intact copy.")
        images = np.empty((expected, 32, 32, 3), np.uint8)
        labels = np.empty(expected, np.int64)
        ranks = np.empty(expected, np.int64)
        for i, name in enumerate(members):
            _, cls, fname = name.split("/")
            try:
                with Image.open(io.BytesIO(files[name])) as im:
                    images[i] = np.asarray(im.convert("RGB"))
            except Exception as e:  # PIL raises several types for bad bytes
                raise CorruptDataError(f"{path}: cannot decode {name} ({e}). Fix: replace the "
                                       f"archive with an intact copy.") from e
            labels[i], ranks[i] = spec.classes.index(cls), int(fname[:-4])
        out[split] = (images.transpose(0, 3, 1, 2).copy(), labels, ranks, "class-sorted")
    return out


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except FileNotFoundError as e:
        raise CorruptDataError(f"{path} is missing from torchvision's layout. Fix: re-download the "
                               f"dataset (load_dataset(..., download=True)).") from e
    except Exception as e:
        raise CorruptDataError(f"{path} cannot be read ({e}). Fix: re-download the dataset.") from e


def _class_rank(labels: np.ndarray) -> np.ndarray:
    ranks = np.empty_like(labels)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        ranks[where] = np.arange(len(where))
    return ranks


def _decode_torchvision(spec: DatasetSpec, path: Path) -> dict:
    if spec.name == "cifar10":
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        key = b"labels"
    else:
        files, key = {"train": ["train"], "test": ["test"]}, b"fine_labels"
    out = {}
    for split, names in files.items():
        parts = [_unpickle(path / n) for n in names]
        images = np.concatenate([p[b"data"] for p in parts]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(p[key], np.int64) for p in parts])
        expected = spec.n_train if split == "train" else spec.n_test
        if len(labels) != expected:
            raise CorruptDataError(f"{path}: {len(labels)} {split} images, expected {expected}.")
        out[split] = (images.astype(np.uint8), labels, _class_rank(labels), "original")
    meta = _unpickle(path / ("batches.meta" if spec.name == "cifar10" else "meta"))
    names = meta.get(b"label_names") or meta.get(b"fine_label_names")
    out["classes"] = tuple(n.decode() for n in names)
    return out


def _download(spec: DatasetSpec) -> None:
    """Fetch torchvision's copy into ``<repo>/data`` (only ever on the user's explicit request)."""
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[spec.name]
    root = paths.repo_root() / "data"
    root.mkdir(exist_ok=True)
    cls(root, train=True, download=True)
    cls(root, train=False, download=True)


def _load_cache(file: Path) -> dict | None:
    if not file.exists():
        return None
    try:
        return torch.load(file, weights_only=True)
    except Exception:  # a torn or foreign cache file: decode again
        file.unlink(missing_ok=True)
        return None



def load_dataset(name: str = "cifar10", source: str | os.PathLike | None = None,
                 download: bool = False) -> Dataset:
    """The dataset ``name`` (``cifar10`` or ``cifar100``) as uint8 tensors, decoded once and cached.

    ``source`` is a file or folder to read instead of the default search; ``download=True`` fetches
    torchvision's copy into ``<repo>/data`` when no copy is found (never done unless asked).
    Used in: every notebook.
    """
    if name not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(SPECS)}")
    spec = SPECS[name]
    try:
        path = _locate(spec, source)
    except DataNotFoundError:
        if not download or (source is None and paths.env_path("DDBOOK_DATA") is not None):
            raise   # a DDBOOK_DATA that lacks the data is refused, not replaced by a download
        _download(spec)
        path = _locate(spec, paths.repo_root() / "data")
    cache = paths.cache_dir() / f"{spec.name}-{_fingerprint(path)}.pt"
    blob = _load_cache(cache)
    if blob is None:
        jpeg = path.suffix == ".zip" or path.name.endswith(TRAVEL_SUFFIX)
        raw = _decode_zip(spec, path) if jpeg else _decode_torchvision(spec, path)
        blob = {"classes": list(raw.get("classes", spec.classes))}
        for split in ("train", "test"):
            images, labels, ranks, order = raw[split]
            blob[split] = {"images": torch.from_numpy(images), "labels": torch.from_numpy(labels),
                           "class_rank": torch.from_numpy(ranks), "order": order}
        paths.save_atomic(cache, blob)
    splits = {s: Split(**blob[s]) for s in ("train", "test")}
    return Dataset(spec.name, tuple(blob["classes"]), splits["train"], splits["test"],
                   spec.mean, spec.std, str(path))


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` → float32 ``(x/255 − mean)/std`` (papers.md §1.2)."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Inverse of :func:`normalize`, clamped to [0, 1] floats, for display."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1)
