"""Nothing lost, nothing silently wrong (issue 16): one test per bad input or fault.

Results are replaced whole or not at all; a variable the user set is used or refused; a user error
on the command line is one line ``error: ...`` (exit 2); a broken cache file is named and, where it
is only a cache, set aside and recomputed; a stale result says what changed; Ctrl-C says where
the run stopped. Tests that need a read-only or full filesystem use a private mount namespace
(``unshare``) and are skipped where that is unavailable.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_sets

from ddbook import params, paths, results
from ddbook.__main__ import main

pytestmark = pytest.mark.usefixtures("one_thread")
LIB = str(REPO / "lib")


def cli(capsys, *argv) -> tuple[int, str]:
    """Run the command line; return (exit code, stderr), checking that stderr is one line."""
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    if code != 0:
        assert "Traceback" not in err and err.count("\n") == 0, f"not one line:\n{err}"
    return code, err


@pytest.fixture
def results_root(tmp_path, monkeypatch):
    root = tmp_path / "results"
    monkeypatch.setenv("DDBOOK_RESULTS", str(root))
    return root


# ------------------------------------------------------------------------------------------
# results lost


def _read(root, name="r"):
    return results.load_result(name, "ci", root=root)


def test_failed_serialisation_keeps_the_previous_result(tmp_path):
    results.save_result("r", "ci", {"acc": 0.5}, {"k": 1}, [0], 1.0, arrays={"x": np.arange(3)},
                        root=tmp_path)
    with pytest.raises(ValueError, match=r"non-finite number \(data.scores\[1\] = nan\).*intact"):
        results.save_result("r", "ci", {"acc": 0.7, "scores": [1.0, float("nan")]}, {"k": 2}, [0],
                            1.0, arrays={"x": np.arange(4)}, root=tmp_path)
    r = _read(tmp_path)
    assert r.data == {"acc": 0.5} and r.arrays["x"].tolist() == [0, 1, 2], "old pair intact"
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files left"


def test_a_crash_between_the_two_files_keeps_the_previous_pair(tmp_path, monkeypatch):
    results.save_result("r", "ci", {"acc": 0.5}, {}, [0], 1.0, arrays={"x": np.arange(3)},
                        root=tmp_path)
    real = os.replace

    def fail_on_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(results.os, "replace", fail_on_json)
    with pytest.raises(results.ResultWriteError, match="No space left.*previous result.*intact"):
        results.save_result("r", "ci", {"acc": 0.9}, {}, [0], 1.0, arrays={"x": np.arange(9)},
                            root=tmp_path)
    monkeypatch.setattr(results.os, "replace", real)
    r = _read(tmp_path)
    assert r.data == {"acc": 0.5} and r.arrays["x"].tolist() == [0, 1, 2], \
        "the JSON still points at the old arrays, which were not touched"
    # the next good write replaces the pair and removes the old arrays file
    results.save_result("r", "ci", {"acc": 0.9}, {}, [0], 1.0, arrays={"x": np.arange(9)},
                        root=tmp_path)
    npz = sorted(p.name for p in (tmp_path / "ci").glob("r.*.npz"))
    assert len(npz) == 1 and _read(tmp_path).arrays["x"].tolist() == list(range(9))
    recorded = json.loads((tmp_path / "ci" / "r.json").read_text())["arrays"]["file"]
    assert recorded in npz and npz.count(recorded) == 1


def test_a_mismatched_pair_is_refused_clearly(tmp_path):
    results.save_result("r", "ci", {}, {}, [0], 1.0, arrays={"x": np.arange(3)}, root=tmp_path)
    npz = tmp_path / "ci" / json.loads((tmp_path / "ci" / "r.json").read_text())["arrays"]["file"]
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(results.CorruptResultError, match="mismatched pair.*safe to delete"):
        _read(tmp_path)
    npz.unlink()
    with pytest.raises(results.CorruptResultError, match="arrays file is missing"):
        _read(tmp_path)


def test_page_run_names_are_not_one_off_names():
    from ddbook.presets import ONE_OFF

    from ddbook import figures
    from ddbook.profiles import get_profile

    names = [piece.name for m in figures.modules().values() for p in ("ci", "quick")
             for piece in m.plan(get_profile(p))]
    assert names and not any(ONE_OFF in n.split("/") for n in names), \
        [n for n in names if ONE_OFF in n.split("/")]


def test_one_off_runs_never_replace_another_configuration(results_root, capsys):
    from ddbook.presets import ONE_OFF

    # a one-off result made from another configuration is not replaced without --overwrite,
    # and the refusal comes before any work (no data is loaded here)
    results.save_result(f"distill/{ONE_OFF}/mtt-cifar10-ipc10", "ci", {"finished": True},
                        {"other": 1}, [0], 1.0)
    code, err = cli(capsys, "distill", "--preset", "mtt-cifar10-ipc10", "--profile", "ci")
    assert code == 2 and "another configuration" in err and "--overwrite" in err, err
    assert results.load_result(f"distill/{ONE_OFF}/mtt-cifar10-ipc10", "ci").data == \
        {"finished": True}


def test_check_replace_allows_the_same_config(tmp_path):
    results.save_result("a", "ci", {}, {"k": 1}, [0], 0.0, root=tmp_path)
    results.check_replace("a", "ci", {"k": 1}, root=tmp_path)
    results.check_replace("missing", "ci", {"k": 2}, root=tmp_path)
    with pytest.raises(results.ResultConflictError, match=r"k: 1 -> 2"):
        results.check_replace("a", "ci", {"k": 2}, root=tmp_path)


# ------------------------------------------------------------------------------------------
# silently wrong input


def test_a_set_data_variable_is_used_or_refused(tmp_path, monkeypatch, capsys):
    import ddbook

    monkeypatch.setenv("DDBOOK_DATA", str(tmp_path / "missing"))
    code, err = cli(capsys, "data")
    assert code == 2 and "DDBOOK_DATA=" in err and "does not exist" in err, err
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("DDBOOK_DATA", str(tmp_path / "empty"))
    with pytest.raises(ddbook.DataNotFoundError, match="DDBOOK_DATA=.*holds no copy") as e:
        ddbook.load_dataset("cifar10")
    assert "shared" not in str(e.value).split("Fix:")[0], "only DDBOOK_DATA was searched"


def test_a_set_scores_variable_is_used_or_refused(cifar10, tmp_path, monkeypatch):
    import ddbook

    monkeypatch.setenv("DDBOOK_SCORES", str(tmp_path / "missing"))
    with pytest.raises(paths.PathSettingError, match="DDBOOK_SCORES=.*does not exist"):
        ddbook.load_published_scores(cifar10, "cscore")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("DDBOOK_SCORES", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="put cscores_CIFAR10.npz in DDBOOK_SCORES="):
        ddbook.load_published_scores(cifar10, "cscore")


def test_shuffled_label_sequence_is_refused_for_the_jpeg_layout(cifar10, tmp_path, monkeypatch):
    import ddbook
    from ddbook.scores import ScoreMismatchError, _find

    assert cifar10.train.order == "class-sorted", "the JPEG layout"
    with np.load(_find("cscores_CIFAR10.npz")) as blob:
        scores, labels = blob["scores"], blob["labels"]
    perm = np.random.default_rng(0).permutation(len(labels))
    np.savez(tmp_path / "cscores_CIFAR10.npz", scores=scores[perm], labels=labels[perm])
    monkeypatch.setenv("DDBOOK_SCORES", str(tmp_path))
    with pytest.raises(ScoreMismatchError, match="not cifar10's original training order"):
        ddbook.load_published_scores(cifar10, "cscore")
    np.savez(tmp_path / "cscores_CIFAR10.npz", scores=scores, labels=labels)
    assert ddbook.load_published_scores(cifar10, "cscore").values.shape == (50_000,), \
        "the unchanged file is accepted"
    (tmp_path / "cscores_CIFAR10.npz").write_bytes(b"garbage")
    with pytest.raises(ScoreMismatchError, match="cscores_CIFAR10.npz cannot be read.*Fix: replace"):
        ddbook.load_published_scores(cifar10, "cscore")


@pytest.mark.parametrize("preset", ["mtt-cifar10-ipc10", "datm-cifar10-ipc10",
                                    "selmatch-cifar10-ipc250"])
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_distill_fraction_is_checked_for_every_preset(preset, value):
    from ddbook.presets import resolve

    with pytest.raises(ValueError, match=r"distill_fraction must be a number in \[0, 1\]"):
        resolve(preset, "ci", {"distill_fraction": value})


@pytest.mark.parametrize("value", [0, -5])
def test_loop_iterations_must_be_positive(value):
    from ddbook.presets import resolve

    with pytest.raises(ValueError, match="loop.iterations must be a whole number >= 1"):
        resolve("mtt-cifar10-ipc10", "ci", {"loop.iterations": value})


def test_unknown_profile_variable_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("DDBOOK_PROFILE", "huge")
    code, err = cli(capsys, "info")
    assert code == 2 and err == ("error: DDBOOK_PROFILE='huge' is not a profile: choose one of "
                                 "ci, quick, gpu, paper (e.g. DDBOOK_PROFILE=quick), or unset it "
                                 "for ci"), err


def test_unknown_notebook_parameter_is_an_error():
    namespace = {"os": os, "profile": "ci", "draw": "quick", "In": [], "Out": {}, "_i": "",
                 "get_ipython": print, "main": main}
    params.check_names(namespace, ["profile", "draw"])
    with pytest.raises(ValueError, match=r"unknown parameter 'n_shwo': this notebook takes "
                                         r"profile, draw"):
        params.check_names({**namespace, "n_shwo": 4}, ["profile", "draw"])


@pytest.mark.parametrize("notebook", sorted((REPO / "notebooks").glob("*.py")))
def test_every_notebook_checks_its_parameter_names(notebook):
    text = notebook.read_text()
    cell = text.split('# %% tags=["parameters"]', 1)[1].split("# %%", 1)[0]
    declared = re.findall(r"^(\w+)\s*:\s*\w+\s*=", cell, re.M)
    checked = re.search(r"params\.page_profiles\(globals\(\), \[(.*?)\]", text)
    assert checked, f"{notebook.name} does not refuse unknown papermill parameters"
    assert re.findall(r'"(\w+)"', checked.group(1)) == declared, \
        f"{notebook.name}: page_profiles lists {checked.group(1)}, the cell declares {declared}"


# ------------------------------------------------------------------------------------------
# user errors: one line, exit 2


@pytest.mark.parametrize("setting, message", [
    ("foo.bar=1", r"unknown setting 'foo.bar'; valid keys: .*match\.\{syn_steps"),
    ("synsteps=3", "unknown setting 'synsteps'; valid keys: source, method, dataset, ipc"),
    ("seed=1", "ambiguous setting 'seed': say loop.seed or experts.seed"),
    ("syn_steps=abc", "setting match.syn_steps must be a whole number, got 'abc'"),
    ("syn_steps=2.5", "setting match.syn_steps must be a whole number, got 2.5"),
    ("checkpoint_every=0", "setting loop.checkpoint_every must be a whole number >= 1, got 0"),
    ("ipc=0", "setting ipc must be a whole number >= 1, got 0"),
    ("ipc=-3", "setting ipc must be a whole number >= 1, got -3"),
    ("lr_img=nan", "setting match.lr_img must be a finite number, got nan"),
    ("lr_img=NaN", "setting match.lr_img must be a finite number, got nan"),
    ("lr_img=inf", "setting match.lr_img must be a finite number, got inf"),
    ("dsa=maybe", "setting match.dsa must be true or false, got 'maybe'"),
    ("syn_steps", "--set needs KEY=VALUE"),
])
def test_bad_set_values_are_one_line_errors(setting, message, results_root, capsys):
    code, err = cli(capsys, "distill", "--preset", "mtt-cifar10-ipc10", "--profile", "ci",
                    "--set", setting)
    assert code == 2 and err.startswith("error: ") and re.search(message, err), err


def test_good_set_values_are_parsed():
    from ddbook.presets import resolve

    p = resolve("mtt-cifar10-ipc10", "ci", {"syn_steps": "3", "lr_img": "1e3", "dsa": "false",
                                            "batch_syn": "null", "loop.eval_at": [1, 2]})
    assert (p.match.syn_steps, p.match.lr_img, p.match.dsa, p.match.batch_syn, p.loop.eval_at) \
        == (3, 1000.0, False, None, (1, 2))


@pytest.mark.parametrize("ratio", ["inf", "nan", "0", "1.5"])
def test_window_ratio_is_checked(ratio, results_root, capsys):
    code, err = cli(capsys, "window", "--ratio", ratio, "--beta", "0.1", "--profile", "ci")
    assert code == 2 and "--ratio must be a number in (0, 1]" in err, err


@pytest.mark.parametrize("shard", ["x/2", "2/2", "1", "-1/2"])
def test_shard_is_checked(shard, results_root, capsys):
    code, err = cli(capsys, "sweep-window", f"--shard={shard}", "--profile", "ci")
    assert code == 2 and "--shard must be k/n with whole numbers 0 <= k < n" in err, err


def test_cache_path_that_is_a_file_or_cannot_be_made(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(paths, "_CHECKED", set())
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path / "file"))
    code, err = cli(capsys, "info")
    assert code == 2 and "DDBOOK_CACHE" in err and "is a file, not a folder" in err, err
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path / "file" / "sub"))
    code, err = cli(capsys, "info")
    assert code == 2 and "cannot be used" in err and "writable folder" in err, err
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path / "new" / "deeper"))
    assert paths.cache_dir().is_dir(), "a missing cache folder is created"


def _in_namespace(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) in a private mount namespace; skip where there is none."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    env = {**os.environ, "PYTHONPATH": LIB, "TQDM_DISABLE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)


def test_read_only_cache_and_results_are_refused_before_the_work(tmp_path):
    for d in ("cache", "results"):
        (tmp_path / d).mkdir()
    py = sys.executable
    proc = _in_namespace(
        f"mount --bind {tmp_path} {tmp_path} && mount -o remount,ro,bind {tmp_path} || exit 99\n"
        f"DDBOOK_CACHE={tmp_path}/cache {py} -m ddbook data; echo rc=$? >&2\n"
        f"DDBOOK_RESULTS={tmp_path}/results {py} -m ddbook window --ratio 0.1 --beta 0 "
        f"--profile ci; echo rc=$? >&2\n", tmp_path)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 0, proc.stderr
    assert any(re.match(r"error: DDBOOK_CACHE .*/cache cannot be used \(Read-only file "
                        r"system\)\. Fix: set DDBOOK_CACHE to a writable folder", l)
               for l in lines), proc.stderr
    assert any(re.match(r"error: the results folder .*results/ci is not writable \(Read-only "
                        r"file system\)", l) for l in lines), proc.stderr
    assert lines.count("rc=2") == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_a_full_disk_keeps_the_previous_result(tmp_path):
    script = tmp_path / "fill.py"
    script.write_text(f"""
import numpy as np
from pathlib import Path
from ddbook import results
root = Path({str(tmp_path / 'small')!r})
results.save_result("r", "ci", {{"acc": 0.5}}, {{}}, [0], 1.0, arrays={{"x": np.arange(3)}},
                    root=root)
big = np.random.default_rng(0).integers(0, 2**31, 200_000)   # ~1.6 MB, incompressible
try:
    results.save_result("r", "ci", {{"acc": 0.9}}, {{}}, [0], 1.0, arrays={{"x": big}}, root=root)
except results.ResultWriteError as e:
    print("refused:", e)
r = results.load_result("r", "ci", root=root)
print("kept:", r.data, r.arrays["x"].tolist())
print("tmp files:", len(list(root.rglob("*.tmp"))))
""")
    (tmp_path / "small").mkdir()
    proc = _in_namespace(f"mount -t tmpfs -o size=512k tmpfs {tmp_path}/small || exit 99\n"
                         f"{sys.executable} {script}", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "refused: cannot write the result" in proc.stdout and \
        "(No space left on device); nothing was replaced" in proc.stdout, proc.stdout
    assert "kept: {'acc': 0.5} [0, 1, 2]" in proc.stdout and "tmp files: 0" in proc.stdout, \
        proc.stdout


# ------------------------------------------------------------------------------------------
# broken cache state


def test_garbage_distillation_checkpoint_is_set_aside(tmp_path, capsys):
    from ddbook import matching

    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage" * 10)
    assert matching._load_checkpoint(tmp_path, None, {}) is False, "starts afresh"
    assert (tmp_path / "checkpoint.pt.corrupt").exists() and not (tmp_path / "checkpoint.pt").exists()
    err = capsys.readouterr().err
    assert "checkpoint.pt was an unreadable distillation checkpoint" in err and \
        "set aside as checkpoint.pt.corrupt (safe to delete)" in err, err


@pytest.fixture(scope="module")
def tiny():
    return tiny_sets(24, 8, size=8, classes=4)


def _experts(folder, tiny, **kw):
    from ddbook.experts import ExpertConfig, train_experts

    cfg = ExpertConfig(network="ConvNet", width=4, depth=1, epochs=2, batch_size=8)
    x, y, xt, yt = tiny
    return train_experts(cfg, x, y, 1, xt, yt, folder=folder, device="cpu", **kw)


def test_broken_expert_files_are_named_then_set_aside_and_retrained(tiny, tmp_path, capsys):
    from ddbook.experts import CorruptCacheError, ExpertBuffer

    good = np.array(_experts(tmp_path / "ref", tiny).trajectory(0))
    folder = tmp_path / "e"
    _experts(folder, tiny)
    npy = folder / "expert_000.npy"
    npy.write_bytes(npy.read_bytes()[:100])           # truncated
    with pytest.raises(CorruptCacheError, match="expert_000.npy cannot be read.*safe to delete"):
        ExpertBuffer(folder).trajectory(0)
    buf = _experts(folder, tiny)
    assert np.array_equal(np.array(buf.trajectory(0)), good), "retrained, bit-identical"
    assert (folder / "expert_000.npy.corrupt").exists()
    assert "set aside as expert_000.npy.corrupt" in capsys.readouterr().err
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CorruptCacheError, match="config.json cannot be read"):
        ExpertBuffer(folder)
    buf = _experts(folder, tiny)
    assert np.array_equal(np.array(buf.trajectory(0)), good), "kept: its shape fits"
    assert (folder / "config.json.corrupt").exists()


def test_garbage_expert_checkpoint_restarts_the_expert(tiny, tmp_path, capsys):
    good = np.array(_experts(tmp_path / "ref", tiny).trajectory(0))
    folder = tmp_path / "e"
    _experts(folder, tiny, stop_after_epochs=1)
    (folder / "expert_000.ckpt.pt").write_bytes(b"garbage")
    buf = _experts(folder, tiny)
    assert np.array_equal(np.array(buf.trajectory(0)), good), "trained again from its start"
    assert "expert_000.ckpt.pt was part of an unreadable checkpoint" in capsys.readouterr().err


def test_garbage_results_json_is_named(tmp_path):
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "r.json").write_text('{"schema": 1, "da')
    with pytest.raises(results.CorruptResultError,
                       match=r"r.json cannot be read \(not a complete results file.*safe to "
                             r"delete and recompute"):
        _read(tmp_path)
    assert issubclass(results.CorruptResultError, results.StaleResultError), \
        "callers that rerun stale results rerun an unreadable one too"


# ------------------------------------------------------------------------------------------
# stale results, Ctrl-C


def test_stale_result_carries_what_changed(tmp_path):
    results.save_result("r", "ci", {}, {"a": 1, "m": {"lr": 0.1, "n": 3}}, [0], 0.0, root=tmp_path)
    with pytest.raises(results.StaleResultError) as e:
        results.load_result("r", "ci", expect_config={"a": 1, "m": {"lr": 0.2, "n": 3}, "b": 0},
                            root=tmp_path)
    assert e.value.diff == {"b": ("<absent>", 0), "m.lr": (0.1, 0.2)}
    assert "is stale" in str(e.value) and "m.lr: 0.1 -> 0.2" in str(e.value)
    assert e.value.path == tmp_path / "ci" / "r.json"
    state, line = results.result_status("r", "ci", {"a": 1, "m": {"lr": 0.2, "n": 3}},
                                        root=tmp_path)
    assert state == "stale" and "m.lr: 0.1 -> 0.2" in line, "reported as stale, not missing"
    assert results.result_status("r", "ci", {"a": 1, "m": {"lr": 0.1, "n": 3}},
                                 root=tmp_path)[0] == "current"
    assert results.result_status("nope", "ci", root=tmp_path)[0] == "missing"


def test_ctrl_c_says_where_the_run_stopped(monkeypatch, results_root, capsys):
    import ddbook.__main__ as cli_module
    from ddbook.train import progress

    def interrupted(args):
        for i in progress(range(10), "distill"):
            for _ in progress(range(4), "mtt eval run 0"):
                if i == 3:
                    raise KeyboardInterrupt
        return 0

    monkeypatch.setattr(cli_module, "_cmd_window", interrupted)
    code = main(["window", "--ratio", "0.1", "--beta", "0", "--profile", "ci"])
    err = capsys.readouterr().err.strip()
    assert code == 130 and err.count("\n") == 0, err
    assert err == ("interrupted in distill after 3 of 10 steps, in mtt eval run 0 after 0 of 4 "
                   "steps; finished pieces and the last checkpoint are kept: rerun `python -m "
                   "ddbook window --ratio 0.1 --beta 0 --profile ci` to resume from there"), err
