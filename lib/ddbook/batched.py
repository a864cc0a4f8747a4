"""Several ConvNets trained as one: K networks stacked into grouped convolutions.

Small networks (the width-32 ConvNets of the ``quick`` profile) leave a CPU core mostly idle in
per-op overhead and in GEMMs too thin to reach the sgemm peak. K networks of the same shape are
one network with K times the channels and grouped convolutions (``groups=K``): group k is
network k, so its weights, gradients, SGD state and batch-norm statistics (per channel, hence
per network) are network k's and no other's. The classifier is one batched matmul.

Every network keeps its own initialisation (built by ``get_network`` from its own seed, then
stacked), its own generator, and its own data order and augmentation draws, made exactly as
:func:`ddbook.train.train_epoch` makes them for one network alone, in the same order; the
augmented batches are then laid side by side. So network k of a stacked run is the network that
``train_epoch`` trains alone, up to float rounding: the grouped convolution adds its products in
another order (tests/test_batched.py checks accuracies, parameters and predictions).

Used in: evaluate (the k runs of one evaluation), experts (a set of experts), figures.selmatch_fig3 (the
runs of one Fig. 3 point); ``batched=None`` there means :func:`use_batched`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import AUGMENT_MODES, augment
from .networks import ConvNet, ConvNetFeatures, _resolve

__all__ = ["StackedConvNet", "stackable", "use_batched", "train_epoch_stacked", "correct_stacked"]

_ELEMENTWISE = (nn.ReLU, nn.Sigmoid, nn.LeakyReLU, nn.AvgPool2d, nn.MaxPool2d)


def _stack_layer(layers: list[nn.Module]) -> nn.Module:
    """One module computing ``layers[k]`` on channel group k (all layers of one type)."""
    m, k = layers[0], len(layers)
    if isinstance(m, nn.Conv2d):
        out = nn.Conv2d(m.in_channels * k, m.out_channels * k, m.kernel_size, m.stride,
                        m.padding, m.dilation, groups=k, bias=m.bias is not None)
    elif type(m) is nn.GroupNorm and m.num_groups == m.num_channels:  # instance norm
        out = nn.GroupNorm(m.num_groups * k, m.num_channels * k, m.eps, m.affine)
    elif type(m) is nn.BatchNorm2d:
        out = nn.BatchNorm2d(m.num_features * k, m.eps, m.momentum, m.affine,
                             m.track_running_stats)
    elif isinstance(m, _ELEMENTWISE):
        return m  # per channel: the same on K·C channels
    else:
        raise ValueError(f"cannot stack {type(m).__name__} (layer/group norm mix channels)")
    out.to(m.weight.device)
    with torch.no_grad():
        for name, t in [*out.named_parameters(), *out.named_buffers()]:
            if name == "num_batches_tracked":
                t.copy_(getattr(m, name))
            else:
                t.copy_(torch.cat([getattr(x, name) for x in layers]))  # (K·C, ...)
    return out


def stackable(model: nn.Module) -> bool:
    """True if ``model`` is a ConvNet that :class:`StackedConvNet` can stack."""
    if type(model) is not ConvNet:
        return False
    return all(isinstance(m, (nn.Conv2d, nn.BatchNorm2d, *_ELEMENTWISE))
               or (type(m) is nn.GroupNorm and m.num_groups == m.num_channels)
               for m in model.features)


def use_batched(batched: bool | None, network: str, width: int | None, depth: int | None,
                k: int, device: torch.device) -> bool:
    """Whether to train ``k`` networks ``network`` stacked: ``batched`` if given, else automatic.

    Automatic (None): on for k >= 2 stackable ConvNets (instance, batch or no norm) on CUDA, off
    on the CPU. On this project's CPU (benchmarks/README.md, "Several networks trained as one")
    stacking measured no faster at the batch sizes the book uses (the grouped convolution is
    slower than K plain ones there and the rest of a step is memory-bound); on CUDA it replaces
    K launches of every kernel by one, which is what small networks are bound by there (not
    measured in this repository: no GPU run yet). ``batched=True`` for a network that cannot be
    stacked is an error, not a silent fallback.
    """
    cls, kwargs = _resolve(network, width, depth)
    ok = cls is ConvNet and kwargs.get("norm", "instance") in ("instance", "batch", "none")
    if batched is None:
        return ok and k >= 2 and torch.device(device).type == "cuda"
    if batched and not ok:
        raise ValueError(f"batched=True needs a ConvNet with instance, batch or no norm; "
                         f"{network!r} cannot be stacked: pass batched=False (or None)")
    return bool(batched)


class _StackedLinear(nn.Module):
    """K linear layers: ``(K, B, F) -> (K, B, out)`` as one batched matmul."""

    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        with torch.no_grad():
            self.weight = nn.Parameter(torch.stack([m.weight for m in layers]))  # (K, out, F)
            self.bias = nn.Parameter(torch.stack([m.bias for m in layers]))  # (K, out)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), f, self.weight.transpose(1, 2))


class StackedConvNet(nn.Module):
    """K ConvNets of one shape as one module: input ``(K, B, C, H, W)``, logits ``(K, B, classes)``.

    Built from the K networks (their parameters and buffers are copied, so each keeps its init);
    :meth:`unstack_into` copies network k's state back into a ConvNet. Channels of network k are
    the k-th block of every layer. The feature layers are a ConvNetFeatures, so the fused CPU
    block tails of ddbook.networks run on the stacked channels too.
    """

    def __init__(self, nets: Sequence[ConvNet]):
        super().__init__()
        if len(nets) < 1 or not all(stackable(n) for n in nets):
            raise ValueError("StackedConvNet needs one or more ConvNets with instance, batch or "
                             "no norm (layer and group norm mix channels)")
        shapes = {tuple((k, tuple(v.shape)) for k, v in n.state_dict().items()) for n in nets}
        if len(shapes) != 1:
            raise ValueError("the networks to stack must have identical shapes")
        self.k = len(nets)
        self.features = ConvNetFeatures(*[_stack_layer([n.features[i] for n in nets])
                                          for i in range(len(nets[0].features))])
        self.classifier = _StackedLinear([n.classifier for n in nets])  # after features: the
        # parameters() order is then network k's, so optimiser state splits per network
        w0 = nets[0].features[0].weight  # the layout get_network chose for these networks
        self.memory_format = torch.channels_last if w0.shape[1] > 1 and w0.stride(1) == 1 \
            else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b, c, h, w = x.shape  # (K, B, C, H, W)
        if k != self.k:
            raise ValueError(f"input holds {k} networks' batches, the stack has {self.k}")
        x = x.transpose(0, 1).reshape(b, k * c, h, w)  # (B, K·C, H, W): network k's channels
        x = x.contiguous(memory_format=self.memory_format)
        f = self.features(x)  # (B, K·C', h', w')
        f = f.reshape(b, k, -1).transpose(0, 1)  # (K, B, C'·h'·w'), each net's flatten order
        return self.classifier(f)  # (K, B, classes)

    def split(self, tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Per network, its slices of ``tensors`` shaped like ``self.parameters()`` (e.g. SGD
        momentum buffers): ``out[k][j]`` is network k's part of parameter j, in ConvNet order."""
        n_head = len(tensors) - 2  # the classifier's weight and bias are stacked on a new dim 0
        return [[t[k] if j >= n_head else t.chunk(self.k)[k] for j, t in enumerate(tensors)]
                for k in range(self.k)]

    def join(self, per_net: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
        """The inverse of :meth:`split`: tensors shaped like ``self.parameters()``."""
        n_head = len(per_net[0]) - 2
        return [(torch.stack if j >= n_head else torch.cat)([ts[j] for ts in per_net])
                for j in range(len(per_net[0]))]

    @torch.no_grad()
    def unstack_into(self, nets: Sequence[ConvNet]) -> None:
        """Copy network k's parameters and buffers into ``nets[k]`` (same shapes as stacked)."""
        for i, m in enumerate(self.features):
            for name, t in [*m.named_parameters(), *m.named_buffers()]:
                for k, net in enumerate(nets):
                    dst = getattr(net.features[i], name)
                    dst.copy_(t if name == "num_batches_tracked" else t.chunk(self.k)[k])
        for k, net in enumerate(nets):
            net.classifier.weight.copy_(self.classifier.weight[k])
            net.classifier.bias.copy_(self.classifier.bias[k])


def _losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-network mean loss ``(K,)``: cross-entropy (hard ``(K, B)``) or soft (``(K, B, K')``)."""
    if labels.is_floating_point():  # soft_cross_entropy of ddbook.train, per network
        return -(F.softmax(labels, -1) * F.log_softmax(logits, -1)).sum(-1).mean(-1)
    k, b, n = logits.shape
    return F.cross_entropy(logits.reshape(k * b, n), labels.reshape(-1),
                           reduction="none").view(k, b).mean(1)


def train_epoch_stacked(model: StackedConvNet, images: Sequence[torch.Tensor],
                        labels: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer,
                        batch_size: int, generators: Sequence[torch.Generator],
                        augment_mode: str = "dsa",
                        is_selected: Sequence[torch.Tensor | None] | None = None,
                        scheduler=None) -> torch.Tensor:
    """One epoch of each of the K stacked networks; return their mean losses ``(K,)``.

    Network k trains on ``(images[k], labels[k])`` (the same tensor may be given K times) with
    ``generators[k]``, drawing its shuffle and augmentations exactly as ``train_epoch`` does
    (one SGD step per batch, ``sgd_step``'s maths). The K sets must have the same size. One
    optimizer over ``model.parameters()`` is exact for SGD: its update is elementwise.
    """
    k = model.k
    if augment_mode not in AUGMENT_MODES:
        raise ValueError(f"unknown augmentation mode {augment_mode!r}; valid: {list(AUGMENT_MODES)}")
    if not len(images) == len(labels) == len(generators) == k:
        raise ValueError(f"need {k} image sets, label sets and generators, got "
                         f"{len(images)}, {len(labels)}, {len(generators)}")
    n = images[0].shape[0]
    if any(x.shape[0] != n for x in images):
        raise ValueError(f"stacked networks need training sets of one size, got "
                         f"{[x.shape[0] for x in images]}")
    sel = list(is_selected) if is_selected is not None else [None] * k
    model.train()
    device = images[0].device
    orders = [torch.randperm(n, generator=g, device=g.device).to(device) for g in generators]
    total = torch.zeros(k, device=device)
    for start in range(0, n, batch_size):
        xs, ys = [], []
        for j, g in enumerate(generators):  # network j's draws, in train_epoch's order
            idx = orders[j][start:start + batch_size]  # (B,)
            s = None if sel[j] is None else sel[j][idx]
            xs.append(augment(images[j][idx], augment_mode, g, s))  # (B, C, H, W)
            ys.append(labels[j][idx])
        loss = _losses(model(torch.stack(xs)), torch.stack(ys))  # (K,)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # network j's gradient is that of its own loss
        optimizer.step()
        total += loss.detach() * len(ys[0])
    if scheduler is not None:
        scheduler.step()
    return total / n


@torch.no_grad()
def correct_stacked(model: StackedConvNet, images: torch.Tensor, labels: torch.Tensor,
                    batch_size: int = 1024) -> torch.Tensor:
    """Bool ``(K, N)``: whether network k's argmax on each test image equals its label.

    Eval mode (BN running statistics); ``batch_size`` images per forward are shared by the K
    networks, so memory stays that of one network's batch of ``batch_size``.
    """
    was_training = model.training
    model.eval()
    try:
        step = max(1, batch_size // model.k)
        out = [model(images[i:i + step].unsqueeze(0).expand(model.k, -1, -1, -1, -1))
               for i in range(0, len(images), step)]
        return torch.cat(out, 1).argmax(-1) == labels.to(images.device)  # (K, N)
    finally:
        model.train(was_training)
