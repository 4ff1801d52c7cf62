"""Weighted kNN classification against hand-computed votes."""

import torch

from pretrain.engine.knn import knn_predict

BANK = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
LABELS = torch.tensor([0, 1, 1])
QUERY = torch.tensor([[1.0, 0.0]])


def test_low_temperature_lets_the_closest_neighbour_win():
    # T = 0.1: class 0 gets exp(10) = 22026, class 1 gets exp(6) + exp(0) = 404
    assert knn_predict(QUERY, BANK, LABELS, num_classes=2, k=3, temperature=0.1).tolist() == [0]


def test_high_temperature_approaches_majority_vote():
    # T = 10: class 0 gets exp(0.1) = 1.105, class 1 gets exp(0.06) + exp(0) = 2.062
    assert knn_predict(QUERY, BANK, LABELS, num_classes=2, k=3, temperature=10.0).tolist() == [1]


def test_k_larger_than_bank_and_chunking():
    queries = torch.nn.functional.normalize(torch.randn(7, 2), dim=1)
    full = knn_predict(queries, BANK, LABELS, 2, k=200, temperature=0.1, chunk_size=1024)
    chunked = knn_predict(queries, BANK, LABELS, 2, k=200, temperature=0.1, chunk_size=2)
    assert torch.equal(full, chunked) and full.shape == (7,)
