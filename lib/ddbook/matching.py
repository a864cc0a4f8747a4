"""Trajectory matching: one engine for MTT, DATM and SelMatch, whose options are their differences.

One distillation iteration (papers.md §2.2, with §3.2 and §4.3 as options):

1. draw an expert i and a start epoch t ~ UniformInt[T-, U(it)), where U(it) = T+ or, with
   DATM's expansion, min(T+, T + floor((T+ - T) * it / expansion_end));
2. from theta_0 = theta*_t, unroll N differentiable SGD steps of the student,
   theta_{k+1} = theta_k - alpha * grad CE(f(theta_k, DSA(X_k)), Y_k), on mini-batches that cycle
   through a random permutation of the whole synthetic set (frozen D_select included);
3. L = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2;
4. unless L exceeds DATM's threshold (then the update is skipped and recorded), step SGD on the
   distilled images (momentum 0.5), on alpha (momentum 0.5) and on soft-label logits (momentum 0.9).

The student is a pure function of one flat parameter vector (the ReparamModule layout, §1.5).
Every random draw of an iteration (expert, start epoch, batches, DSA parameters) is made up
front from explicit generators, so a segment of the unroll can be recomputed exactly: with
``recompute_segments = k`` only the graph of k steps is alive at a time (exact gradients; about
one extra first-order unroll of compute). Long runs checkpoint everything needed to resume
bit-identically (CPU) and stop on a non-finite loss or step size, keeping the last good checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from . import paths
from .augment import DSA_STRATEGY, DSAParams, apply_dsa, sample_dsa
from .experts import ExpertBuffer
from .fused import _AvgPool2, _Norm, _NormReLUPool, convnet_plan  # noqa: F401 (tests)
from .networks import functional_forward, unflatten_params
from .synset import SyntheticSet, expert_network, save_synset
from .train import classification_loss, default_device, progress

__all__ = ["MatchConfig", "LoopConfig", "UnrollStep", "DistillResult", "DistillationDiverged",
           "start_epoch_bound", "sample_start_epoch", "make_plan", "make_student", "unroll",
           "param_distance", "matching_loss", "matching_grads", "distill", "snapshot_iterations"]


@dataclass(frozen=True)
class MatchConfig:
    """One iteration's maths and optimisers; defaults: MTT's CIFAR-10 IPC 10 (papers.md §2.4)."""
    syn_steps: int = 30               # N, student steps per unroll (MTT --syn_steps)
    expert_epochs: int = 2            # M, target = expert snapshot t + M (--expert_epochs)
    min_start_epoch: int = 0          # T-, smallest start epoch (DATM min_start_epoch; MTT 0)
    max_start_epoch: int = 20         # T+, start epochs lie below it (--max_start_epoch)
    initial_max_start_epoch: int | None = None  # T, DATM current_max_start_epoch; None: U = T+
    expansion_end: int | None = None  # DATM expansion_end_epoch, in iterations, for U to reach T+
    batch_syn: int | None = None      # images per unroll step; None: the whole set (--batch_syn)
    lr_img: float = 100.0             # SGD lr on the distilled images (--lr_img)
    img_momentum: float = 0.5         # their SGD momentum (MTT, DATM, SelMatch)
    lr_lr: float = 1e-5               # SGD lr on the step size alpha (--lr_lr)
    lr_momentum: float = 0.5          # its SGD momentum
    learn_labels: bool = False        # learn soft-label logits (DATM); needs a soft-label set
    lr_label: float = 2.0             # SGD lr on the label logits (DATM lr_y)
    label_momentum: float = 0.9       # their SGD momentum (DATM Momentum_y)
    threshold: float | None = None    # skip the update when L > threshold (DATM: 1.0; 1.1 C10 IPC1)
    dsa: bool = True                  # DSA on every unroll batch (all three methods)
    dsa_strategy: str = DSA_STRATEGY  # DSA op groups
    recompute_segments: int = 0       # 0: keep the whole unroll graph; k: recompute k steps a time
    student: str = "auto"             # "auto": explicit functional plan for ConvNets; "module"

    def __post_init__(self):
        if self.syn_steps < 1 or self.expert_epochs < 1:
            raise ValueError(f"need syn_steps >= 1 and expert_epochs >= 1, got {self.syn_steps}, "
                             f"{self.expert_epochs}")
        if not 0 <= self.min_start_epoch < self.max_start_epoch:
            raise ValueError(f"need 0 <= min_start_epoch < max_start_epoch, got "
                             f"{self.min_start_epoch}, {self.max_start_epoch}")
        t0 = self.initial_max_start_epoch
        if t0 is not None and not (self.min_start_epoch < t0 <= self.max_start_epoch
                                   and (self.expansion_end or 0) >= 1):
            raise ValueError(f"initial_max_start_epoch must lie in (min_start_epoch, "
                             f"max_start_epoch] with expansion_end >= 1, got {t0}, "
                             f"{self.expansion_end}")
        if self.recompute_segments < 0 or self.student not in ("auto", "module"):
            raise ValueError(f"recompute_segments must be >= 0 and student 'auto' or 'module', "
                             f"got {self.recompute_segments}, {self.student!r}")


@dataclass(frozen=True)
class LoopConfig:
    """A distillation run: its length, evaluation points, checkpoints and seed."""
    iterations: int = 5000            # distillation iterations (MTT --Iteration)
    eval_every: int | None = 100      # evaluate every k iterations, at 0 and at the end (--eval_it)
    eval_at: tuple[int, ...] = ()     # extra evaluation iterations (SelMatch: 0, 500, ..., 10000)
    checkpoint_every: int = 50        # write a resumable checkpoint every k iterations
    report_iteration: int | None = None  # the declared evaluation point; None: the final iteration
    seed: int = 0                     # distillation generators: seed (schedule), seed + 1 (unroll)

    def eval_points(self) -> list[int]:
        every = range(0, self.iterations + 1, self.eval_every) if self.eval_every else []
        return sorted({*every, *self.eval_at, self.iterations} & set(range(self.iterations + 1)))


@dataclass(frozen=True, eq=False)
class UnrollStep:
    """One student step's draw: which synthetic images and which DSA transform."""
    indices: torch.Tensor             # (b,) int64 indices into the synthetic set
    dsa: DSAParams | None             # per-sample DSA draw for those b images, or None


class DistillationDiverged(RuntimeError):
    """The matching loss, the step size or the images became NaN or infinite."""

    def __init__(self, iteration: int, what: str, value: float, checkpoint: Path | None):
        self.iteration, self.what, self.value, self.checkpoint = iteration, what, value, checkpoint
        kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
        super().__init__(f"distillation diverged at iteration {iteration}: {what} = {value}{kept}")


@dataclass(frozen=True, eq=False)
class DistillResult:
    """A finished (or stopped) run. ``report`` is read at the declared iteration; ``best`` is
    the best evaluation over checkpoints, an optimistic number that is labelled as such."""
    synset: SyntheticSet              # after the last iteration done
    history: dict                     # per iteration: loss, expert, start, skipped, syn_lr, ...
    curve: list                       # evaluations: {"iteration", "mean", "std", ...}
    report: dict | None               # evaluation at the declared iteration
    best: dict | None                 # best mean over the curve (selected on the test set!)
    best_synset: SyntheticSet | None  # the set at ``best``
    iterations_done: int
    finished: bool


# ------------------------------------------------------------------------------------------
# schedule: start epochs and unroll plans


def start_epoch_bound(iteration: int, config: MatchConfig) -> int:
    """U(it), the exclusive upper bound of the start epoch at iteration ``it`` (0-based).

    Source: DATM ``Sequential_Generation`` (papers.md §3.2):
    U = min(T+, T + floor((T+ - T) * it / expansion_end)); without expansion U = T+ (MTT).
    """
    t0, t_max = config.initial_max_start_epoch, config.max_start_epoch
    if t0 is None:
        return t_max
    return min(t_max, t0 + (t_max - t0) * iteration // config.expansion_end)


def sample_start_epoch(iteration: int, config: MatchConfig, generator: torch.Generator) -> int:
    """t ~ UniformInt[T-, U(it)) (MTT/DATM ``randint(min_start, current_max_start)``)."""
    upper = start_epoch_bound(iteration, config)
    return int(torch.randint(config.min_start_epoch, upper, (), generator=generator))


def make_plan(n: int, batch_syn: int | None, syn_steps: int, size: tuple,
              generator: torch.Generator, dsa: bool = True,
              strategy: str = DSA_STRATEGY) -> list[UnrollStep]:
    """The ``syn_steps`` mini-batches (and DSA draws) of one unroll, drawn from ``generator``.

    Source: MTT ``distill.py`` (papers.md §2.2): chunks of a random permutation of the whole set,
    re-permuted when used up; a last chunk may be smaller. Used in: matching_grads, tests.
    """
    batch = min(batch_syn or n, n)
    plan, pending = [], []
    for _ in range(syn_steps):
        if not pending:
            pending = list(torch.randperm(n, generator=generator).split(batch))
        idx = pending.pop(0)
        draw = sample_dsa(len(idx), size, generator, strategy) if dsa else None
        plan.append(UnrollStep(idx, draw))
    return plan


# ------------------------------------------------------------------------------------------
# the student: a pure function of a flat parameter vector (fused CPU kernels in ddbook.fused)


def make_student(model: nn.Module, impl: str = "auto") -> Callable:
    """``f(theta (P,), x (B, C, H, W)) -> logits (B, K)``: ``model`` as a function of flat params.

    Source: papers.md §1.5 (ReparamModule). For the ConvNet family ("auto") the layers are
    replayed as functional ops chosen for double backward (instance norm with a written-out
    double backward, 2x2 pooling as a linear op); norms use batch statistics (training mode,
    as SelMatch's ConvNetBN students; running statistics play no role). Anything else goes
    through ``functional_forward`` in training mode.
    Used in: unroll, tests (against an nn.Module SGD loop).
    """
    ops = convnet_plan(model) if impl == "auto" else None
    if ops is None:
        model.train()
        return lambda theta, x: functional_forward(model, theta, x)

    def student(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        p = unflatten_params(model, theta)
        for op in ops:
            x = op(p, x)
        return x
    return student


# ------------------------------------------------------------------------------------------
# the unroll and the matching loss


def _student_step(student, theta, images, labels, syn_lr, step: UnrollStep,
                  create_graph: bool) -> torch.Tensor:
    """theta - syn_lr * grad CE on the step's batch (MTT distill.py inner loop)."""
    idx = step.indices.to(images.device)
    x = images[idx]                                   # (b, C, H, W)
    if step.dsa is not None:
        x = apply_dsa(x, step.dsa)
    ce = classification_loss(student(theta, x), labels[idx])
    grad, = torch.autograd.grad(ce, theta, create_graph=create_graph)
    return theta - syn_lr * grad


def unroll(student, theta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
           syn_lr: torch.Tensor, plan: list[UnrollStep], create_graph: bool = True) -> torch.Tensor:
    """theta_N ``(P,)`` after the steps of ``plan`` from ``theta`` (differentiable if create_graph).

    Without create_graph every step is detached: a cheap forward pass (recompute mode, pass 1).
    """
    if not create_graph:
        images, labels, syn_lr = images.detach(), labels.detach(), syn_lr.detach()
    for step in plan:
        if not theta.requires_grad:
            theta = theta.detach().requires_grad_(True)
        theta = _student_step(student, theta, images, labels, syn_lr, step, create_graph)
        if not create_graph:
            theta = theta.detach()
    return theta


def param_distance(theta: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||theta - target||^2 / ||start - target||^2 (MTT Eq. 2; the /num_params cancels)."""
    denom = (start - target).square().sum()
    if float(denom) == 0.0:
        raise ValueError("start and target snapshots are identical (||theta*_t - theta*_{t+M}||"
                         " = 0): were the expert snapshots saved without clone()? (perf.md traps)")
    return (theta - target).square().sum() / denom


def matching_loss(student, theta_start, theta_target, images, labels, syn_lr,
                  plan: list[UnrollStep]) -> torch.Tensor:
    """The normalised parameter-distance loss of one unroll; differentiable in images, labels, α.

    Source: MTT ``distill.py`` (papers.md §2.2). Used in: matching_grads, tests (finite diffs).
    """
    theta = theta_start.detach().requires_grad_(True)
    return param_distance(unroll(student, theta, images, labels, syn_lr, plan), theta_start,
                          theta_target)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 or len(parts[1]) == 0 else torch.cat(parts)


def matching_grads(student, theta_start, theta_target, images: list[torch.Tensor],
                   labels: list[torch.Tensor], syn_lr: torch.Tensor, plan: list[UnrollStep],
                   leaves: list[torch.Tensor], segments: int = 0,
                   threshold: float | None = None) -> tuple[torch.Tensor, list | None]:
    """(loss, gradients of the loss w.r.t. ``leaves``), or (loss, None) when loss > threshold.

    ``images``/``labels`` are [distilled, selected] parts, concatenated for the unroll (the frozen
    part takes part but gets no gradient). ``segments = 0`` keeps the whole graph; ``segments = k``
    first runs the unroll without a graph, keeping theta every k steps, then walks the segments
    backwards, recomputing each with its graph and pulling the adjoint of theta through it
    (exact; the graph of only k steps is alive). Used in: distill, tests.
    """
    if segments <= 0:
        loss = matching_loss(student, theta_start, theta_target, _cat(images), _cat(labels),
                             syn_lr, plan)
        if threshold is not None and float(loss.detach()) > threshold:
            return loss.detach(), None
        return loss.detach(), list(torch.autograd.grad(loss, leaves, allow_unused=True))
    starts = list(range(0, len(plan), segments))
    thetas, theta = [], theta_start.detach()
    for s in starts:
        thetas.append(theta)
        theta = unroll(student, theta, _cat(images), _cat(labels), syn_lr, plan[s:s + segments],
                       create_graph=False)
    theta_n = theta.requires_grad_(True)
    loss = param_distance(theta_n, theta_start, theta_target)
    if threshold is not None and float(loss.detach()) > threshold:
        return loss.detach(), None
    adjoint, = torch.autograd.grad(loss, theta_n)       # (P,) dL/dtheta_N
    grads = [None] * len(leaves)
    for s, theta_s in zip(reversed(starts), reversed(thetas)):
        theta_s = theta_s.detach().requires_grad_(True)
        end = unroll(student, theta_s, _cat(images), _cat(labels), syn_lr, plan[s:s + segments])
        outs = torch.autograd.grad(end, [theta_s, *leaves], adjoint, allow_unused=True)
        adjoint = outs[0]
        grads = [g if o is None else (o if g is None else g + o) for g, o in zip(grads, outs[1:])]
    return loss.detach(), grads


# ------------------------------------------------------------------------------------------
# the distillation loop


@dataclass
class _State:
    """Everything that changes during a run (and goes into a checkpoint)."""
    images: torch.Tensor              # (n_distill, C, H, W) leaf, updated
    fixed_images: torch.Tensor        # (n_select, C, H, W), never updated
    labels: torch.Tensor              # (n_distill,) hard or (n_distill, K) logits (leaf if learned)
    fixed_labels: torch.Tensor        # labels of the selected part, never updated
    syn_lr: torch.Tensor              # () leaf
    optimizers: dict                  # name -> torch.optim.SGD
    generators: dict                  # "schedule", "unroll" -> torch.Generator (CPU)
    done: int = 0                     # iterations done
    history: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)
    best: dict | None = None


def _new_state(synset: SyntheticSet, config: MatchConfig, seed: int, device) -> _State:
    if config.learn_labels and not synset.soft:
        raise ValueError("learn_labels=True needs soft-label logits; initialise them with "
                         "synset.expert_soft_labels (DATM) or pass float (n, K) labels")
    order = torch.cat([torch.nonzero(~synset.is_selected).flatten(),
                       torch.nonzero(synset.is_selected).flatten()]).to(synset.images.device)
    if not torch.equal(order.cpu(), torch.arange(len(synset))):
        raise ValueError("store the distilled images first, then the selected ones "
                         "(SelMatch's order; synset.from_indices does this)")
    n_d = len(synset) - synset.num_selected
    images = synset.images[:n_d].detach().clone().to(device).requires_grad_(True)
    labels = synset.labels[:n_d].detach().clone().to(device).requires_grad_(config.learn_labels)
    syn_lr = torch.tensor(synset.syn_lr, device=device).requires_grad_(True)
    opts = {"images": torch.optim.SGD([images], lr=config.lr_img, momentum=config.img_momentum),
            "syn_lr": torch.optim.SGD([syn_lr], lr=config.lr_lr, momentum=config.lr_momentum)}
    if config.learn_labels:
        opts["labels"] = torch.optim.SGD([labels], lr=config.lr_label,
                                         momentum=config.label_momentum)
    gens = {"schedule": torch.Generator().manual_seed(seed),
            "unroll": torch.Generator().manual_seed(seed + 1)}
    history = {k: [] for k in ("loss", "expert", "start_epoch", "upper", "skipped", "syn_lr",
                               "seconds")}
    return _State(images, synset.images[n_d:].detach().clone().to(device), labels,
                  synset.labels[n_d:].detach().clone().to(device), syn_lr, opts, gens,
                  history=history)


def _as_synset(state: _State, template: SyntheticSet, iteration: int) -> SyntheticSet:
    meta = {**template.meta, "iteration": iteration}
    return replace(template, images=_cat([state.images.detach(), state.fixed_images]).clone(),
                   labels=_cat([state.labels.detach(), state.fixed_labels]).clone(),
                   syn_lr=float(state.syn_lr.detach()), meta=meta)


def _iteration(state: _State, student, buffer: ExpertBuffer, config: MatchConfig,
               experts: list[int], device) -> dict:
    """Run one distillation iteration in place; return its record."""
    t0 = time.perf_counter()
    gen = state.generators["schedule"]
    expert = experts[int(torch.randint(len(experts), (), generator=gen))]
    start = sample_start_epoch(state.done, config, gen)
    theta_start = buffer.snapshot(expert, start, device)                        # (P,)
    theta_target = buffer.snapshot(expert, start + config.expert_epochs, device)  # (P,)
    n = len(state.images) + len(state.fixed_images)
    plan = make_plan(n, config.batch_syn, config.syn_steps, tuple(state.images.shape[-2:]),
                     state.generators["unroll"], config.dsa, config.dsa_strategy)
    leaves = [state.images, state.syn_lr] + ([state.labels] if config.learn_labels else [])
    loss, grads = matching_grads(student, theta_start, theta_target,
                                 [state.images, state.fixed_images],
                                 [state.labels, state.fixed_labels], state.syn_lr, plan, leaves,
                                 config.recompute_segments, config.threshold)
    if grads is not None and math.isfinite(float(loss)):
        names = ["images", "syn_lr"] + (["labels"] if config.learn_labels else [])
        for name, leaf, g in zip(names, leaves, grads):
            leaf.grad = torch.zeros_like(leaf) if g is None else g
            state.optimizers[name].step()
            leaf.grad = None
    return {"loss": float(loss), "expert": expert, "start_epoch": start,
            "upper": start_epoch_bound(state.done, config), "skipped": grads is None,
            "syn_lr": float(state.syn_lr.detach()), "seconds": time.perf_counter() - t0}


def _check_finite(state: _State, record: dict, folder: Path | None) -> None:
    ckpt = folder / "checkpoint.pt" if folder and (folder / "checkpoint.pt").exists() else None
    it = state.done
    for what, value in (("matching loss", record["loss"]), ("step size syn_lr", record["syn_lr"])):
        if not math.isfinite(value):
            raise DistillationDiverged(it, what, value, ckpt)
    if record["syn_lr"] <= 0:   # the student would climb its loss; evaluation cannot use it
        raise DistillationDiverged(it, "step size syn_lr (not positive: lower lr_lr)",
                                   record["syn_lr"], ckpt)
    if not bool(torch.isfinite(state.images).all()):
        bad = state.images[~torch.isfinite(state.images)][0]
        raise DistillationDiverged(it, "a synthetic pixel", float(bad), ckpt)
    if state.labels.is_floating_point() and not bool(torch.isfinite(state.labels).all()):
        raise DistillationDiverged(it, "a label logit", float("nan"), ckpt)


def initial_set_digest(synset: SyntheticSet) -> str:
    """16 hex digits of the set's images, labels and selection mask, to the bit."""
    h = hashlib.sha256()
    for t in (synset.images, synset.labels, synset.is_selected):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _config_record(config: MatchConfig, loop: LoopConfig, synset: SyntheticSet) -> dict:
    """What a checkpoint must agree on to be resumed: the maths, the seed and the initial set.
    (The loop's length and evaluation points may change, so a run can be extended.)"""
    return {"match": asdict(config), "seed": loop.seed, "n": len(synset),
            "selected": synset.num_selected, "soft": synset.soft, "syn_lr": synset.syn_lr,
            "initial_set": initial_set_digest(synset)}


def _save_checkpoint(folder: Path, state: _State, record: dict) -> None:
    blob = {"config": json.dumps(record, sort_keys=True), "done": state.done,
            "images": state.images.detach().cpu(), "labels": state.labels.detach().cpu(),
            "syn_lr": state.syn_lr.detach().cpu(),
            "optimizers": {k: o.state_dict() for k, o in state.optimizers.items()},
            "generators": {k: g.get_state() for k, g in state.generators.items()},
            "history": json.dumps(state.history), "curve": json.dumps(state.curve),
            "best": json.dumps(state.best)}
    paths.save_atomic(folder / "checkpoint.pt", blob)


def _load_checkpoint(folder: Path, state: _State, record: dict, cache: bool = False) -> bool:
    """Restore ``state`` from ``folder/checkpoint.pt``; False when there is none (or, in a
    ``cache`` folder, when it belongs to another run and was set aside)."""
    path = folder / "checkpoint.pt"
    if not path.exists():
        return False
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        config = json.loads(blob["config"])
    except Exception as e:  # torn or foreign bytes: torch raises several types
        from .experts import set_aside
        set_aside(path, f"an unreadable distillation checkpoint ({type(e).__name__})",
                  "the run starts again from iteration 0")
        return False
    want = json.loads(json.dumps(record, sort_keys=True))
    if config != want:
        if cache:
            from .experts import set_aside
            what = ("a checkpoint of a run from another initial set (made on another CPU or with "
                    "other kernels)" if config.get("match") == want["match"]
                    else "a checkpoint of another run")
            set_aside(path, what, "the run starts again from iteration 0")
            return False
        raise ValueError(f"{path} belongs to a run with another config; use another folder or "
                         f"delete it to start afresh")
    with torch.no_grad():
        state.images.copy_(blob["images"])
        state.labels.copy_(blob["labels"])
        state.syn_lr.copy_(blob["syn_lr"])
    for k, opt in state.optimizers.items():
        opt.load_state_dict(blob["optimizers"][k])
    for k, gen in state.generators.items():
        gen.set_state(blob["generators"][k])
    state.done, state.history = blob["done"], json.loads(blob["history"])
    state.curve, state.best = json.loads(blob["curve"]), json.loads(blob["best"])
    return True


def _evaluate(state: _State, template: SyntheticSet, evaluate: Callable,
              folder: Path | None) -> None:
    snap = _as_synset(state, template, state.done)
    out = evaluate(snap)
    out = out.to_dict() if hasattr(out, "to_dict") else dict(out)
    point = {"iteration": state.done, **out}
    state.curve.append(point)
    if state.best is None or point["mean"] > state.best["mean"]:
        state.best = {"iteration": state.done, "mean": point["mean"], "std": point.get("std"),
                      "label": "best over evaluation checkpoints (selected on test accuracy: "
                               "optimistic, not the declared result)"}
        if folder is not None:
            save_synset(folder / "synset_best.pt", snap)


def distill(synset: SyntheticSet, buffer: ExpertBuffer, config: MatchConfig,
            loop: LoopConfig = LoopConfig(), *, evaluate: Callable | None = None,
            folder: str | os.PathLike | None = None, device=None,
            stop_after: int | None = None,
            callback: Callable[[int, dict], None] | None = None,
            snapshot_every: int | None = None, cache: bool = False) -> DistillResult:
    """Distil ``synset`` by matching ``buffer``'s trajectories; resumable from ``folder``.

    Source: MTT ``distill.py`` main loop (papers.md §2.2) with DATM's soft labels, start-epoch
    expansion and threshold (§3.2) and SelMatch's partial update (§4.3) as options of ``config``.
    The student is the experts' architecture. ``evaluate(synset) -> EvalResult | dict`` (with
    ``mean``) runs at ``loop.eval_points()``; the result reports the declared iteration and,
    separately labelled, the best point. With ``folder`` a checkpoint (state, optimiser momenta,
    generator states, history) is written every ``loop.checkpoint_every`` iterations and at each
    evaluation, and a run found there is resumed. ``stop_after=k`` stops after k iterations (as if
    killed). A non-finite loss, step size or pixel raises DistillationDiverged.
    ``snapshot_every=k`` (needs ``folder``; default off) also keeps the whole set at iteration 0,
    every k iterations and the last one as ``folder/snapshots/synset_<iteration>.pt``
    (:func:`snapshot_iterations` lists them); it is an execution option, not part of the run's
    config (no checkpoint or result depends on it), and it changes no number of the run.
    A checkpoint in ``folder`` made by another run (another configuration, seed or initial set) is
    refused with a ValueError; with ``cache=True`` (``folder`` is the library's own cache folder,
    keyed by the configuration) it is set aside as ``checkpoint.pt.corrupt`` and the run starts
    from iteration 0: there what differs is the initial set, e.g. one computed through a network
    on another CPU or with other kernels (``ddbook.ckernels``) when the folder's key omits it.
    Used in: presets.run_preset, selmatch_scale.run_piece (coverage during distillation), the
    distillation notebooks.
    """
    device = torch.device(device) if device is not None else default_device()
    folder = Path(folder) if folder is not None else None
    experts = buffer.experts()
    if not experts:
        raise ValueError(f"the expert buffer {buffer.folder} has no finished experts")
    if config.max_start_epoch - 1 + config.expert_epochs > buffer.epochs:
        raise ValueError(f"the last start epoch {config.max_start_epoch - 1} + expert_epochs "
                         f"{config.expert_epochs} exceeds the experts' {buffer.epochs} epochs")
    model = expert_network(buffer, device)
    student = make_student(model, config.student)
    state = _new_state(synset, config, loop.seed, device)
    record = _config_record(config, loop, synset)
    if snapshot_every is not None and (folder is None or snapshot_every < 1):
        raise ValueError(f"snapshot_every={snapshot_every} needs a folder to write into and a "
                         f"positive number of iterations; pass folder=... or snapshot_every=None")
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        _load_checkpoint(folder, state, record, cache)
    points = loop.eval_points() if evaluate is not None else []
    bar = progress(range(state.done, loop.iterations), "distill",
                   total=loop.iterations - state.done)
    for _ in bar:
        _snapshot(state, synset, folder, snapshot_every)
        if state.done in points and all(p["iteration"] != state.done for p in state.curve):
            _evaluate(state, synset, evaluate, folder)
            if folder is not None:
                _save_checkpoint(folder, state, record)
        rec = _iteration(state, student, buffer, config, experts, device)
        _check_finite(state, rec, folder)
        for k, v in rec.items():
            state.history[k].append(v)
        state.done += 1
        if callback is not None:
            callback(state.done, rec)
        if folder is not None and (state.done % loop.checkpoint_every == 0
                                   or state.done == loop.iterations):
            _save_checkpoint(folder, state, record)
        if stop_after is not None and state.done >= stop_after and state.done < loop.iterations:
            if folder is not None:
                _save_checkpoint(folder, state, record)
            return _result(state, synset, loop, folder, finished=False)
    _snapshot(state, synset, folder, snapshot_every, last=True)
    if state.done in points and all(p["iteration"] != state.done for p in state.curve):
        _evaluate(state, synset, evaluate, folder)
        if folder is not None:
            _save_checkpoint(folder, state, record)
    return _result(state, synset, loop, folder, finished=True)


def _snapshot(state: _State, template: SyntheticSet, folder: Path | None, every: int | None,
              last: bool = False) -> None:
    """Keep the set at this iteration when it is due (every k, and the last) and not yet kept."""
    if every is None or not (last or state.done % every == 0):
        return
    path = folder / "snapshots" / f"synset_{state.done:06d}.pt"
    if not path.exists():   # a resumed run keeps the snapshots written before the interruption
        save_synset(path, _as_synset(state, template, state.done))


def snapshot_iterations(folder: str | os.PathLike) -> list[int]:
    """The iterations whose set :func:`distill` kept in ``folder`` (``snapshot_every``), sorted."""
    return sorted(int(p.stem.split("_")[1]) for p in (Path(folder) / "snapshots").glob(
        "synset_*.pt"))


def _result(state: _State, template: SyntheticSet, loop: LoopConfig, folder: Path | None,
            finished: bool) -> DistillResult:
    final = _as_synset(state, template, state.done)
    if folder is not None and finished:
        save_synset(folder / "synset_final.pt", final)
    declared = loop.report_iteration if loop.report_iteration is not None else loop.iterations
    report = next(({**p, "label": "declared evaluation point" + (
        " (final iteration)" if declared == loop.iterations else "")}
        for p in state.curve if p["iteration"] == declared), None)
    best_set = None
    if state.best is not None and folder is not None and (folder / "synset_best.pt").exists():
        from .synset import load_synset
        best_set = load_synset(folder / "synset_best.pt")
    return DistillResult(final, state.history, state.curve, report, state.best, best_set,
                         state.done, finished)
