"""ddbook: the library behind the book on difficulty-aware dataset distillation.

Notebooks import from here and never redefine library functions. Modules, one job each:

- :mod:`ddbook.data` — CIFAR-10/100 as cached uint8 tensors, per-class indices, normalisation
- :mod:`ddbook.zca` — ZCA whitening (ε = 0.1) and its inverse
- :mod:`ddbook.scores` — published difficulty scores mapped onto the dataset's order
- :mod:`ddbook.profiles` — the ci / quick / gpu / paper scales, as data
- :mod:`ddbook.results` — result files with provenance, written atomically
- :mod:`ddbook.params` — readable errors for bad notebook parameters
- :mod:`ddbook.networks` (+ :mod:`ddbook.resnet`) — ConvNet family, ResNet-18, AlexNet, VGG-11;
  the functional student over a flat parameter vector
- :mod:`ddbook.augment` — DSA (single and siamese modes), crop+flip, SelMatch's combined augmentation
- :mod:`ddbook.plotting` — the book's figures (imported on demand: it pulls in matplotlib)
"""
from .augment import augment, dsa, sample_dsa, apply_dsa, simple_augment, combined_augment
from .data import (CorruptDataError, DataNotFoundError, Dataset, Split, denormalize, load_dataset,
                   normalize)
from .networks import (count_params, flatten_params, functional_forward, get_network,
                       network_names, unflatten_params)
from .profiles import PROFILES, Profile, get_profile
from .results import StaleResultError, Timer, load_result, save_result
from .scores import ScoreMismatchError, Scores, load_published_scores
from .zca import ZCA, cached_zca, fit_zca

__version__ = "0.1.0"

__all__ = [
    "CorruptDataError", "DataNotFoundError", "Dataset", "Split", "denormalize", "load_dataset",
    "normalize", "PROFILES", "Profile", "get_profile", "StaleResultError", "Timer", "load_result",
    "save_result", "ScoreMismatchError", "Scores", "load_published_scores", "ZCA", "cached_zca",
    "fit_zca", "augment", "dsa", "sample_dsa", "apply_dsa", "simple_augment", "combined_augment",
    "count_params", "flatten_params", "functional_forward", "get_network", "network_names",
    "unflatten_params",
]
