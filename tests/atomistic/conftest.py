"""Shared by the potential and calculator tests."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors: on a shared machine a second intra-op thread costs more than it gives.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
