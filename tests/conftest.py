"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny networks on one intra-op thread: they gain nothing from more, and when the suite
    shares the CPU with other work, spinning OpenMP threads make them several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
