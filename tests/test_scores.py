"""Published scores: mapped onto the dataset's order, with clear errors for files that do not fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ddbook
from ddbook.data import Split
from ddbook.scores import ScoreMismatchError, map_to_split


def _split(labels, order):
    labels = torch.as_tensor(labels)
    ranks = torch.zeros_like(labels)
    for c in labels.unique():
        where = torch.nonzero(labels == c).flatten()
        ranks[where] = torch.arange(len(where))
    return Split(torch.zeros(len(labels), 3, 2, 2, dtype=torch.uint8), labels, ranks, order)


def test_mapping_by_within_class_rank():
    # original order: labels 1 0 1 0 with scores 10 20 30 40
    file_labels = np.array([1, 0, 1, 0])
    values = np.array([10.0, 20.0, 30.0, 40.0])
    sorted_split = _split([0, 0, 1, 1], "class-sorted")   # class 0 rank 0,1 then class 1 rank 0,1
    mapped = map_to_split(values, file_labels, sorted_split, "toy")
    assert mapped.tolist() == [20.0, 40.0, 10.0, 30.0], f"class-sorted mapping wrong: {mapped}"
    original = _split([1, 0, 1, 0], "original")
    assert map_to_split(values, file_labels, original, "toy").tolist() == values.tolist()


def test_length_mismatch_is_an_error():
    with pytest.raises(ScoreMismatchError, match="3 scores"):
        map_to_split(np.ones(3), np.array([0, 1, 0]), _split([0, 1, 0, 1], "class-sorted"), "toy")


def test_class_count_mismatch_is_an_error():
    with pytest.raises(ScoreMismatchError, match="class counts"):
        map_to_split(np.ones(4), np.array([0, 0, 0, 1]), _split([0, 0, 1, 1], "class-sorted"), "toy")


def test_label_sequence_mismatch_is_an_error():
    with pytest.raises(ScoreMismatchError, match="index 0"):
        map_to_split(np.ones(4), np.array([1, 0, 0, 1]), _split([0, 1, 0, 1], "original"), "toy")


def test_published_cscores_on_cifar10(cifar10):
    s = ddbook.load_published_scores(cifar10, "cscore")
    assert s.values.shape == (50_000,) and s.hard == "low"
    assert 0.0 <= s.values.min() and s.values.max() <= 1.0, "C-scores are probabilities"
    order = s.hardest_first(cifar10.train, 0)
    assert (cifar10.train.labels[order] == 0).all()
    assert s.values[order[0]] <= s.values[order[-1]], "hardest first = lowest C-score first"


def test_forgetting_agrees_in_direction_with_cscore(cifar10):
    c = ddbook.load_published_scores(cifar10, "cscore")
    f = ddbook.load_published_scores(cifar10, "forgetting")
    assert f.hard == "high"
    from scipy.stats import spearmanr

    rho = spearmanr(c.values, f.values).statistic
    assert rho < -0.5, f"C-score and forgetting should be strongly anti-correlated, got {rho:.2f}"
    shuffled = spearmanr(c.values, f.values[torch.randperm(50_000, generator=torch.Generator().manual_seed(0))]).statistic
    assert abs(shuffled) < 0.05, "a broken mapping gives about zero"


def test_unknown_score_name(cifar10):
    with pytest.raises(ValueError, match="cscore"):
        ddbook.load_published_scores(cifar10, "el2n")


def test_missing_score_file(cifar10, tmp_path, monkeypatch):
    from ddbook import paths

    monkeypatch.setattr(paths, "scores_dirs", lambda: [tmp_path])
    with pytest.raises(FileNotFoundError, match="DDBOOK_SCORES"):
        ddbook.load_published_scores(cifar10, "cscore")
