"""Result files: provenance, atomic writes, staleness, profiles and parameter checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ddbook
from ddbook import params, results
from ddbook.profiles import PROFILES, get_profile


def test_round_trip_with_provenance(tmp_path):
    config = {"ipc": 10, "lr": 0.01, "net": {"width": 32}}
    path = results.save_result("fig/run0", "quick", {"acc": np.float32(0.5), "curve": torch.arange(3)},
                               config, seeds=[0, 1], wall_time=1.25, root=tmp_path)
    assert path == tmp_path / "quick" / "fig" / "run0.json"
    r = results.load_result("fig/run0", "quick", expect_config=config, root=tmp_path)
    assert r.data == {"acc": 0.5, "curve": [0, 1, 2]}
    prov = r.provenance
    for key in ("sha", "profile", "config", "config_hash", "seeds", "device", "torch", "wall_time_s",
                "python", "created"):
        assert key in prov, f"provenance lacks {key}"
    assert prov["profile"] == "quick" and prov["seeds"] == [0, 1] and prov["config"] == config
    assert prov["torch"] == torch.__version__
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files left behind"


def test_arrays_are_checksummed(tmp_path):
    results.save_result("a", "ci", {}, {}, [], 0.0, arrays={"x": np.arange(5)}, root=tmp_path)
    r = results.load_result("a", "ci", root=tmp_path)
    assert r.arrays["x"].tolist() == [0, 1, 2, 3, 4]
    npz = tmp_path / "ci" / json.loads((tmp_path / "ci" / "a.json").read_text())["arrays"]["file"]
    np.savez_compressed(npz, x=np.arange(6))
    with pytest.raises(results.StaleResultError, match="checksum"):
        results.load_result("a", "ci", root=tmp_path)


def test_stale_config_is_refused(tmp_path):
    results.save_result("r", "ci", {"acc": 1}, {"ipc": 10}, [0], 0.1, root=tmp_path)
    with pytest.raises(results.StaleResultError, match="stale"):
        results.load_result("r", "ci", expect_config={"ipc": 50}, root=tmp_path)
    # key order does not matter
    assert results.config_hash({"a": 1, "b": 2}) == results.config_hash({"b": 2, "a": 1})


def test_missing_result_and_bad_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="run it first"):
        results.load_result("nope", "ci", root=tmp_path)
    assert results.load_result("nope", "ci", root=tmp_path, missing_ok=True) is None
    with pytest.raises(ValueError, match="relative path"):
        results.save_result("../escape", "ci", {}, {}, [], 0.0, root=tmp_path)
    with pytest.raises(ValueError, match="unknown profile"):
        results.save_result("x", "huge", {}, {}, [], 0.0, root=tmp_path)


def test_non_finite_numbers_are_refused(tmp_path):
    with pytest.raises(ValueError):
        results.save_result("nan", "ci", {"acc": float("nan")}, {}, [], 0.0, root=tmp_path)
    assert not (tmp_path / "ci" / "nan.json").exists(), "nothing written on failure"


def test_profiles_are_data():
    assert set(PROFILES) == {"ci", "quick", "gpu", "paper"}
    assert get_profile("paper").n_experts == 100 and get_profile("paper").width == 128
    assert not get_profile("ci").meaningful
    with pytest.raises(ValueError, match="ci, quick, gpu, paper"):
        get_profile("huge")


def test_default_profile_from_environment(monkeypatch):
    monkeypatch.setenv("DDBOOK_PROFILE", "quick")
    assert get_profile().name == "quick"
    monkeypatch.delenv("DDBOOK_PROFILE")
    assert get_profile().name == "ci"


def test_parameter_checks():
    assert params.check("n", 3, int, low=1) == 3
    assert params.check("lr", 1, float) == 1.0
    with pytest.raises(TypeError, match="'n' must be an integer, got str 'many'"):
        params.check("n", "many", int)
    with pytest.raises(TypeError, match="integer"):
        params.check("n", True, int)
    with pytest.raises(ValueError, match="one of"):
        params.check("score", "el2n", str, choices=["cscore"])
    with pytest.raises(ValueError, match=r"\[1, 16\]"):
        params.check("n", 40, int, low=1, high=16)


def test_command_line_info(capsys):
    from ddbook.__main__ import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "quick" in out and "cache" in out
    with pytest.raises(SystemExit):
        main(["-h"])
