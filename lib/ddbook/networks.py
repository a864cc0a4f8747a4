"""Networks: the ConvNet family, AlexNet and VGG-11, a seeded factory, and pure-function students.

Source: papers.md §1.1 (architectures, named variants, parameter counts) and §1.5 (the flat
parameter vector of ReparamModule: ``torch.cat([p.reshape(-1) for p in model.parameters()])``).
ResNet-18 and its variants live in :mod:`ddbook.resnet`.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
from torch.func import functional_call

from .resnet import ResNet18, resnet_norm

__all__ = ["ConvNet", "AlexNet", "VGG11", "ResNet18", "get_network", "network_names",
           "functional_forward", "flatten_params", "unflatten_params", "count_params"]

NORMS = ("instance", "batch", "layer", "group", "none")
POOLINGS = ("avg", "max", "none")
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu")


def _check_choice(kind: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid: {list(valid)}")


def make_norm(norm: str, shape: tuple[int, int, int]) -> nn.Module | None:
    """Return the ConvNet norm layer for features of shape ``(C, H, W)``, or None for "none".

    Source: papers.md §1.1, "Norm options". Layer norm normalises over (C, H, W) with an
    elementwise affine of that full shape, so its parameter count depends on the image size.
    Used in: ConvNet.
    """
    _check_choice("norm", norm, NORMS)
    c = shape[0]
    if norm == "instance":
        return nn.GroupNorm(c, c, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(c, affine=True)
    if norm == "layer":
        return nn.LayerNorm(list(shape), elementwise_affine=True)
    if norm == "group":
        return nn.GroupNorm(4, c, affine=True)
    return None


def make_activation(activation: str) -> nn.Module:
    """Return the ConvNet activation (ReLU, sigmoid, or leaky ReLU with slope 0.01)."""
    _check_choice("activation", activation, ACTIVATIONS)
    if activation == "relu":
        return nn.ReLU()
    return nn.Sigmoid() if activation == "sigmoid" else nn.LeakyReLU(0.01)


def convnet_layers(channels: int, width: int, depth: int, norm: str, pooling: str,
                   activation: str, im_size: tuple) -> tuple[list[nn.Module], list[int]]:
    """Return the ConvNet feature layers and the feature shape ``[C, H, W]`` they output.

    Source: papers.md §1.1, "One block": conv 3x3 (padding 3 on the first layer of 1-channel
    input, so 28x28 MNIST becomes 32x32), norm, activation, 2x2 pool with stride 2.
    Used in: ConvNet.
    """
    _check_choice("pooling", pooling, POOLINGS)
    if depth < 1 or width < 1:
        raise ValueError(f"ConvNet needs depth >= 1 and width >= 1, got {depth=}, {width=}")
    layers, shape = [], [channels, *im_size]
    for d in range(depth):
        pad = 3 if channels == 1 and d == 0 else 1
        layers.append(nn.Conv2d(shape[0], width, kernel_size=3, padding=pad))
        shape = [width, shape[1] + 2 * pad - 2, shape[2] + 2 * pad - 2]
        norm_layer = make_norm(norm, tuple(shape))
        layers += [norm_layer] if norm_layer is not None else []
        layers.append(make_activation(activation))
        if pooling != "none":
            pool = nn.AvgPool2d if pooling == "avg" else nn.MaxPool2d
            layers.append(pool(2, stride=2))
            shape = [width, shape[1] // 2, shape[2] // 2]
        if min(shape[1:]) < 1:
            raise ValueError(f"im_size {tuple(im_size)} is too small for a depth-{depth} ConvNet")
    return layers, shape


class ConvNet(nn.Module):
    """The distillation student: ``depth`` conv blocks and one linear layer; logits ``(B, K)``.

    Source: papers.md §1.1 (MTT/DATM/SelMatch ``ConvNet``; defaults width 128, depth 3, instance
    norm, ReLU, average pooling). Layers sit in ``features`` (an ``nn.Sequential``) and
    ``classifier``, as in the reference, so names and ``parameters()`` order agree with it.
    Used in: every distillation and evaluation notebook (through get_network).
    """

    def __init__(self, channels: int = 3, num_classes: int = 10, width: int = 128, depth: int = 3,
                 norm: str = "instance", pooling: str = "avg", activation: str = "relu",
                 im_size: tuple = (32, 32)):
        super().__init__()
        layers, shape = convnet_layers(channels, width, depth, norm, pooling, activation, im_size)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(shape[0] * shape[1] * shape[2], num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, C*h*w)`` of images ``x`` ``(B, channels, H, W)``."""
        return torch.flatten(self.features(x), 1)  # reshape, not view: channels-last safe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class AlexNet(nn.Module):
    """AlexNet as adapted by DC for 32x32 images: five convs, three max-pools, one linear layer.

    Source: papers.md §1.1 table: conv 128-5x5 / 192-5x5 / 256-3x3 / 192-3x3 / 192-3x3 with ReLU,
    max-pools after the 1st, 2nd and 5th conv; padding 2 on the first conv (4 for 1-channel).
    The reference names the linear layer ``fc``; here it is ``classifier`` like every network.
    Used in: cross-architecture evaluation (get_network("AlexNet")).
    """

    def __init__(self, channels: int = 3, num_classes: int = 10, im_size: tuple = (32, 32)):
        super().__init__()
        pad = 4 if channels == 1 else 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2, stride=2),
            nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, stride=2),
            nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=2))
        h, w = ((s + 2 * pad - 4) // 8 for s in im_size)  # (B, 192, 4, 4) on 32x32
        if h < 1 or w < 1:
            raise ValueError(f"im_size {tuple(im_size)} is too small for AlexNet")
        self.classifier = nn.Linear(192 * h * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


VGG11_CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG-11 with a norm after every conv and one linear layer on the ``512*h*w`` features.

    Source: papers.md §1.1 table: config 64-M-128-M-256-256-M-512-512-M-512-512-M, conv 3x3 with
    bias, instance norm (GroupNorm(C, C)) by default, batch norm for VGG11BN; Linear(512, K).
    Used in: cross-architecture evaluation (get_network("VGG11"), get_network("VGG11BN")).
    """

    def __init__(self, channels: int = 3, num_classes: int = 10, norm: str = "instance",
                 im_size: tuple = (32, 32)):
        super().__init__()
        layers, c, (h, w) = [], channels, im_size
        for i, v in enumerate(VGG11_CONFIG):
            if v == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
                h, w = h // 2, w // 2
                continue
            pad = 3 if channels == 1 and i == 0 else 1
            layers += [nn.Conv2d(c, v, 3, padding=pad), resnet_norm(norm, v), nn.ReLU()]
            c, h, w = v, h + 2 * pad - 2, w + 2 * pad - 2
        if h < 1 or w < 1:
            raise ValueError(f"im_size {tuple(im_size)} is too small for VGG-11")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512 * h * w, num_classes)  # (B, 512) on 32x32

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# Reference name -> (class, keyword arguments). ConvNetD<n> and ConvNetW<n> are parsed instead.
# Unlike the reference, every name passes im_size through (there, ConvNetBN & co. assume 32x32).
_NAMED = {
    "ConvNet": (ConvNet, {}),
    "ConvNetBN": (ConvNet, {"norm": "batch"}), "ConvNetIN": (ConvNet, {"norm": "instance"}),
    "ConvNetLN": (ConvNet, {"norm": "layer"}), "ConvNetGN": (ConvNet, {"norm": "group"}),
    "ConvNetNN": (ConvNet, {"norm": "none"}),
    "ConvNetMP": (ConvNet, {"pooling": "max"}), "ConvNetAP": (ConvNet, {"pooling": "avg"}),
    "ConvNetNP": (ConvNet, {"pooling": "none"}),
    "ConvNetAS": (ConvNet, {"activation": "sigmoid"}),
    "ConvNetAR": (ConvNet, {"activation": "relu"}),
    "ConvNetAL": (ConvNet, {"activation": "leakyrelu"}),
    "ConvNetD4BN": (ConvNet, {"depth": 4, "norm": "batch"}),
    "ResNet18": (ResNet18, {}), "ResNet18BN": (ResNet18, {"norm": "batch"}),
    "ResNet18_AP": (ResNet18, {"avg_pool": True}),
    "ResNet18BN_AP": (ResNet18, {"norm": "batch", "avg_pool": True}),
    "ResNet18_Tiny": (ResNet18, {"stem_stride": 2}),
    "ResNet18BN_Tiny": (ResNet18, {"norm": "batch", "stem_stride": 2}),
    "AlexNet": (AlexNet, {}),
    "VGG11": (VGG11, {}), "VGG11BN": (VGG11, {"norm": "batch"}),
}
_PATTERN = re.compile(r"ConvNet([DW])([1-9][0-9]*)")


def network_names() -> list[str]:
    """Names get_network accepts (``<n>`` is a positive integer)."""
    return [*_NAMED, "ConvNetD<n> (depth n, e.g. ConvNetD1..ConvNetD8)",
            "ConvNetW<n> (width n, e.g. ConvNetW32..ConvNetW1024)"]


def _resolve(name: str, width: int | None, depth: int | None) -> tuple[type, dict]:
    """Return the class and keyword arguments for a reference network name."""
    match = _PATTERN.fullmatch(name)
    if match:
        cls, kwargs = ConvNet, {"depth" if match[1] == "D" else "width": int(match[2])}
    elif name in _NAMED:
        cls, kwargs = _NAMED[name][0], dict(_NAMED[name][1])
    else:
        raise ValueError(f"unknown network {name!r}; valid names: {network_names()}")
    for key, value in (("width", width), ("depth", depth)):
        if value is None:
            continue
        if cls is not ConvNet:
            raise ValueError(f"{key}= applies to the ConvNet family only, not {name!r}")
        if kwargs.get(key, value) != value:
            raise ValueError(f"{name!r} fixes {key}={kwargs[key]}, but {key}={value} was given")
        kwargs[key] = value
    return cls, kwargs


def get_network(name: str, num_classes: int, im_size: tuple = (32, 32), channels: int = 3,
                width: int | None = None, depth: int | None = None, *, seed: int | None = None,
                generator: torch.Generator | None = None, device: str | torch.device | None = None,
                memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """Return the network ``name`` (a reference name, papers.md §1.1) with a reproducible init.

    Source: the reference ``get_network``, without its clock re-seeding (STYLE.md §4.3).
    The init is PyTorch's default, drawn from ``seed`` (or one integer drawn from ``generator``)
    in a forked CPU RNG, so the global RNG is neither read nor advanced; with neither given it
    comes from the global RNG like a plain ``nn.Module``. ``device`` defaults to CUDA when present.
    ``width``/``depth`` override the ConvNet defaults (e.g. a width-32 student at ``quick``).
    Used in: experts, evaluation and distillation notebooks.
    """
    cls, kwargs = _resolve(name, width, depth)
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    if generator is not None:
        seed = int(torch.randint(0, 2**62, (), generator=generator))
    kwargs.update(channels=channels, num_classes=num_classes, im_size=tuple(im_size))
    if seed is None:
        model = cls(**kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: leaves CUDA's global RNG alone
            model = cls(**kwargs)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device=device, memory_format=memory_format)


def count_params(model: nn.Module) -> int:
    """Number of scalar parameters (buffers such as BN running stats are not counted)."""
    return sum(p.numel() for p in model.parameters())


def flatten_params(model: nn.Module) -> torch.Tensor:
    """Return a detached copy ``(P,)`` of all parameters, concatenated in ``parameters()`` order.

    Source: papers.md §1.5/§1.6: the layout of ReparamModule's ``flat_param`` and of a flattened
    expert snapshot. Used in: experts, matching (the student's starting point).
    """
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten_params(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return ``{name: view of flat}`` shaped like ``model.named_parameters()``; keeps autograd.

    Source: papers.md §1.5 (ReparamModule's views of one flat vector). Used in: functional_forward.
    """
    total = count_params(model)
    if flat.dim() != 1 or flat.numel() != total:
        raise ValueError(f"flat must have shape ({total},) for this model, got {tuple(flat.shape)}")
    out, start = {}, 0
    for name, p in model.named_parameters():
        out[name] = flat[start:start + p.numel()].view(p.shape)
        start += p.numel()
    return out


def functional_forward(model: nn.Module, params: dict[str, torch.Tensor] | torch.Tensor,
                       x: torch.Tensor,
                       buffers: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Return ``model(x)`` computed with ``params`` (a dict or a flat ``(P,)`` vector) instead.

    Source: papers.md §1.5; ``torch.func.functional_call`` replaces ReparamModule. Gradients flow
    to ``params`` and ``x`` (``create_graph=True`` for unrolled students). Buffers not given are
    the module's own; in training mode BN updates them in place, as in the reference.
    Used in: matching (the unrolled student), tests.
    """
    if isinstance(params, torch.Tensor):
        params = unflatten_params(model, params)
    tensors = {**params, **(buffers or {})}
    return functional_call(model, tensors, (x,))
