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
- :mod:`ddbook.train` — the shared training loop, prediction, soft labels, GSAM steps
- :mod:`ddbook.experts` — expert trajectories: trained resumably, stored compactly, loaded lazily
- :mod:`ddbook.evaluate` — the MTT/DATM and SelMatch evaluation protocols
- :mod:`ddbook.selection`, :mod:`ddbook.difficulty`, :mod:`ddbook.scoring` — the sliding window and
  baselines; forgetting and EL2N scores and the training runs that make them
- :mod:`ddbook.coverage`, :mod:`ddbook.feature_net`, :mod:`ddbook.analysis` — coverage of the test
  set (our operationalisation), the feature network, t-SNE and per-example gradient norms
- :mod:`ddbook.matching` (+ :mod:`ddbook.fused`, its CPU kernels), :mod:`ddbook.presets` — the
  trajectory-matching engine and the published settings as data; :mod:`ddbook.ckernels` — the
  ConvNet block tail as C loops on the CPU (``DDBOOK_KERNELS``), for students and networks alike
- :mod:`ddbook.figures` — one module per book page (plan, run, load, verdicts), auto-discovered;
  :mod:`ddbook.reference` — the papers' numbers
- :mod:`ddbook.plotting` — the book's figures (imported on demand: it pulls in matplotlib)
"""
from .augment import apply_dsa, combined_augment, dsa, sample_dsa, simple_augment
from .data import (CorruptDataError, DataNotFoundError, Dataset, Split, denormalize, load_dataset,
                   normalize)
from .evaluate import EvalResult, MTTEvalConfig, SelMatchEvalConfig, evaluate_mtt, evaluate_selmatch
from .experts import ExpertBuffer, ExpertConfig, train_experts
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
    "fit_zca", "dsa", "sample_dsa", "apply_dsa", "simple_augment", "combined_augment",
    "count_params", "flatten_params", "functional_forward", "get_network", "network_names",
    "unflatten_params", "EvalResult", "MTTEvalConfig", "SelMatchEvalConfig", "evaluate_mtt",
    "evaluate_selmatch", "ExpertBuffer", "ExpertConfig", "train_experts",
]
