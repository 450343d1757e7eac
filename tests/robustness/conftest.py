"""Fixtures for the robustness tests.

The models here are tiny (a few hundred nodes' worth of work at most), where a second OpenMP
thread only adds synchronisation; on a loaded 2-core machine spinning threads can slow such
calls a hundredfold.  Each test in this folder runs single-threaded; the setting is restored
afterwards so the rest of the suite is unaffected.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
