"""Tests for ddbook.experts: storage format, determinism, resume after a kill, lazy loading."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import tiny_sets

from ddbook.experts import ExpertBuffer, ExpertConfig, train_experts
from ddbook.networks import count_params, flatten_params, get_network

CPU = "cpu"
# ConvNetBN with momentum: resuming must restore BN buffers, momentum buffers and the generator.
CFG = ExpertConfig(network="ConvNetBN", width=8, depth=2, epochs=3, batch_size=16, momentum=0.9,
                   seed=5)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return tiny_sets(40, 12)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """Two experts trained without interruption."""
    x, y, xt, yt = data
    return train_experts(CFG, x, y, 2, xt, yt, folder=tmp_path_factory.mktemp("ref"), device=CPU)


def test_storage_format(reference):
    p = count_params(get_network("ConvNetBN", 4, (16, 16), width=8, depth=2, device=CPU))
    assert reference.experts() == [0, 1], f"finished experts {reference.experts()}, want [0, 1]"
    traj = reference.trajectory(1)
    assert traj.shape == (CFG.epochs + 1, p) and traj.dtype == np.float32, \
        f"trajectory {traj.shape} {traj.dtype}, want ({CFG.epochs + 1}, {p}) float32"
    meta = json.loads((reference.folder / "config.json").read_text())
    assert meta["config"]["epochs"] == 3 and meta["num_params"] == p, f"config.json: {meta}"
    info = reference.info(0)
    assert len(info["test_accuracy"]) == CFG.epochs + 1, "one test accuracy per snapshot"
    assert all(0 <= a <= 1 for a in info["test_accuracy"]), f"accuracies {info['test_accuracy']}"
    assert len(info["train_loss"]) == CFG.epochs, "one train loss per epoch"
    leftovers = sorted(p.name for p in reference.folder.glob("*") if "ckpt" in p.name
                       or "partial" in p.name)
    assert not leftovers, f"finished experts left checkpoint files: {leftovers}"


def test_init_seed_and_snapshots_are_copies(reference):
    for i in (0, 1):
        net = get_network("ConvNetBN", 4, (16, 16), width=8, depth=2, seed=CFG.seed + i, device=CPU)
        assert torch.equal(reference.snapshot(i, 0), flatten_params(net)), \
            f"expert {i}'s snapshot 0 must be the init drawn from seed + {i}"
    traj = torch.from_numpy(np.array(reference.trajectory(0)))
    for e in range(CFG.epochs):
        assert not torch.equal(traj[e], traj[e + 1]), \
            f"snapshots {e} and {e + 1} are equal: snapshots alias the live weights"
    assert not torch.equal(reference.snapshot(0, -1), reference.snapshot(1, -1)), \
        "experts 0 and 1 must differ"


def test_training_is_deterministic(reference, data, tmp_path):
    x, y, xt, yt = data
    again = train_experts(CFG, x, y, 1, xt, yt, folder=tmp_path, device=CPU)
    assert np.array_equal(again.trajectory(0), reference.trajectory(0)), \
        "the same config and seed must give a bit-identical trajectory"


def test_killed_and_resumed_run_equals_uninterrupted(reference, data, tmp_path):
    x, y, xt, yt = data
    partial = train_experts(CFG, x, y, 2, xt, yt, folder=tmp_path, device=CPU, stop_after_epochs=1)
    assert partial.experts() == [], "a stopped expert must not be published"
    assert (tmp_path / "expert_000.ckpt.pt").exists(), "the checkpoint must survive the stop"
    with pytest.raises(FileNotFoundError, match="partly trained"):
        partial.snapshot(0, 0)

    def kill(i, epoch, acc):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
    with pytest.raises(KeyboardInterrupt):
        train_experts(CFG, x, y, 2, xt, yt, folder=tmp_path, device=CPU, callback=kill)
    resumed = train_experts(CFG, x, y, 2, xt, yt, folder=tmp_path, device=CPU)
    assert resumed.experts() == [0, 1], f"after resuming, experts {resumed.experts()}"
    for i in (0, 1):
        for e in range(CFG.epochs + 1):
            assert torch.equal(resumed.snapshot(i, e), reference.snapshot(i, e)), \
                f"expert {i} epoch {e}: the resumed run differs from the uninterrupted one"
    assert resumed.test_accuracy(0) == reference.test_accuracy(0), "accuracies differ after resume"


def test_lazy_buffer(reference):
    buffer = ExpertBuffer(reference.folder)
    traj = buffer.trajectory(1)
    assert isinstance(traj, np.memmap), f"trajectory must be a memory map, got {type(traj)}"
    assert not traj.flags.writeable, "the memory map must be read-only"
    snap = buffer.snapshot(1, 2)
    assert isinstance(snap, torch.Tensor) and snap.shape == (buffer.num_params,), \
        f"snapshot {type(snap)} {getattr(snap, 'shape', None)}"
    assert torch.equal(snap, torch.from_numpy(np.array(traj[2]))), "snapshot != trajectory row"
    snap += 1.0  # a private copy: the file must be untouched
    assert torch.equal(buffer.snapshot(1, 2) + 1.0, snap), "snapshot shares memory with the file"
    assert torch.equal(buffer.snapshot(1, -1), buffer.snapshot(1, CFG.epochs)), "-1 = last"
    with pytest.raises(ValueError, match="epoch must lie"):
        buffer.snapshot(1, CFG.epochs + 1)


def test_missing_expert_and_folder_errors(reference, tmp_path):
    with pytest.raises(FileNotFoundError, match="expert_007.npy") as err:
        reference.trajectory(7)
    assert "train_experts" in str(err.value), f"the error must say how to make it: {err.value}"
    with pytest.raises(FileNotFoundError, match="config.json"):
        ExpertBuffer(tmp_path / "nowhere")


def test_folder_refuses_another_config(reference, data):
    other = ExpertConfig(network="ConvNetBN", width=8, depth=2, epochs=4, batch_size=16)
    with pytest.raises(ValueError, match="another config"):
        train_experts(other, *data[:2], n_experts=1, folder=reference.folder, device=CPU)


def test_default_folder_is_keyed_in_the_cache(data, monkeypatch, tmp_path):
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path))
    cfg = ExpertConfig(network="ConvNetD1", width=4, epochs=1, batch_size=40, augment="none")
    a = train_experts(cfg, *data[:2], n_experts=1, device=CPU)
    b = train_experts(dataclasses.replace(cfg, lr=0.02), *data[:2], n_experts=1,
                      device=CPU)
    assert a.folder.parent == tmp_path / "experts", f"default folder {a.folder} not in the cache"
    assert a.folder != b.folder, "another config must get another folder"


def test_gsam_experts_train(data, tmp_path):
    cfg = ExpertConfig(network="ConvNetD1", width=4, epochs=1, batch_size=20, gsam=True)
    traj = train_experts(cfg, *data[:2], n_experts=1, folder=tmp_path, device=CPU).trajectory(0)
    assert np.isfinite(traj).all() and not np.array_equal(traj[0], traj[1]), "GSAM expert broken"


def test_bad_config_and_labels():
    with pytest.raises(ValueError, match="augment"):
        ExpertConfig(augment="combined")
    with pytest.raises(ValueError, match="hard int64"):
        train_experts(ExpertConfig(), torch.zeros(4, 3, 8, 8), torch.zeros(4, 2), 1, device=CPU)


_SHARED_SCRIPT = """
import sys, time, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from conftest import tiny_sets
from ddbook.experts import ExpertConfig, train_experts
cfg = ExpertConfig(**{cfg!r})
x, y, xt, yt = tiny_sets(40, 12)
log = open({log!r}, "a")
def record(i, epoch, acc):
    log.write(f"{{sys.argv[1]}} {{i}} {{epoch}}\\n"); log.flush()
    time.sleep(0.3)                        # keep the two processes overlapping
buf = train_experts(cfg, x, y, 2, xt, yt, folder={folder!r}, device="cpu", callback=record)
print(buf.experts())
"""


def test_two_processes_split_a_shared_buffer(reference, tmp_path):
    """Two processes asked for the same experts train each one once (a file lock per expert),
    both end with the whole buffer, and it equals one process's."""
    import subprocess
    import sys
    from pathlib import Path

    folder, log = tmp_path / "shared", tmp_path / "log.txt"
    script = _SHARED_SCRIPT.format(tests=str(Path(__file__).parent), cfg=dataclasses.asdict(CFG),
                                   log=str(log), folder=str(folder))
    procs = [subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in ("A", "B")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert all(o[0].strip() == "[0, 1]" for o in outs), outs
    trained = {}
    for line in log.read_text().split("\n"):
        if line:
            who, i, _ = line.split()
            trained.setdefault(int(i), set()).add(who)
    assert set(trained) == {0, 1} and all(len(who) == 1 for who in trained.values()), \
        f"an expert was trained by both processes: {trained}"
    assert trained[0] != trained[1], f"one process trained both experts: {trained}"
    shared = ExpertBuffer(folder)
    for i in (0, 1):
        assert np.array_equal(np.array(shared.trajectory(i)), np.array(reference.trajectory(i))), \
            f"expert {i} of the shared buffer differs from one process's"
