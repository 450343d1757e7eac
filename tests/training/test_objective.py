"""The loss and RMSD of the denoising task, and the bf16 fallback of --precision auto."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

from equiformer.data import load_embedded
from equiformer.training.data import make_batch
from equiformer.training.objective import bf16_problem, denoise, rmsd, squared_deviation


def test_rmsd_counts_only_real_atoms():
    truth = torch.zeros(2, 4, 3)
    coords = torch.zeros(2, 4, 3)
    coords[0, 0] = torch.tensor([3.0, 4.0, 0.0])  # 5 Å off
    coords[0, 3] = 100.0  # padding: must not count
    coords[1, :2] = torch.tensor([1.0, 0.0, 0.0])
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    torch.testing.assert_close(squared_deviation(coords, truth, mask), torch.tensor([12.5, 0.5]))
    torch.testing.assert_close(rmsd(coords, truth, mask), torch.tensor([math.sqrt(12.5), math.sqrt(0.5)]))


class Displace(nn.Module):
    """Stands in for the Equiformer: type-1 output = a learned multiple of the coordinates."""

    def __init__(self, broken: bool = False):
        super().__init__()
        self.scale = nn.Linear(3, 3, bias=False)
        self.broken = broken

    def forward(self, tokens, coords, mask, adj_mat):
        out = self.scale(coords)  # bf16 under autocast
        if self.broken:  # the mixed-dtype scatter that autocast does not fix
            out = coords.new_zeros(out.shape).index_add(0, torch.arange(len(out)), out)
        return SimpleNamespace(type1=out)


def test_denoised_is_noisy_plus_noise_times_type1_and_bf16_probe():
    example = make_batch(load_embedded()[:2], [1, 2], 8, 0.5, torch.float32)
    model = Displace()
    nn.init.eye_(model.scale.weight)
    torch.testing.assert_close(denoise(model, example, 0.5, "fp32"), 1.5 * example.noisy)
    assert bf16_problem(model, example) is None
    assert "index_add" in bf16_problem(Displace(broken=True), example)
