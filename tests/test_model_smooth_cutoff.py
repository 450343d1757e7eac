"""``smooth_cutoff``: no amplification of inputs from neighbours near ``valid_radius``, so outputs
and their gradients fade continuously as a neighbour crosses the radius."""
import torch

from model_factory import make_model

RADIUS = 2.5


def _dimer(model, distance: float, grad: bool = False):
    """Two nodes ``distance`` apart along a fixed direction: (energy = sum of type 0, |type 1| of
    node 0, force on node 1 if ``grad``)."""
    direction = torch.tensor([0.6, -0.48, 0.64], dtype=torch.float64)
    coors = torch.stack([torch.zeros(3, dtype=torch.float64), distance * direction])
    coors.requires_grad_(grad)
    feats = torch.tensor([[0.3, -1.0, 0.5, 0.2, 0.9], [1.1, 0.4, -0.7, 0.0, 0.3]], dtype=torch.float64)
    out = model.forward_packed(feats, coors)
    energy = out.type0.sum()
    force = -torch.autograd.grad(energy, coors)[0][1] if grad else None
    return energy.detach(), out.type1[0].detach().norm(), force


def test_directional_outputs_fade_with_the_envelope():
    smooth = make_model(num_neighbors=float("inf"), valid_radius=RADIUS, smooth_cutoff=True)
    plain = make_model(num_neighbors=float("inf"), valid_radius=RADIUS)
    for fraction in (1e-3, 1e-4):
        d = RADIUS * (1 - fraction)
        # the envelope is ~35 (1 - d/r)^3 there: a node's only direction is that faint
        assert _dimer(smooth, d)[1] <= 1e3 * fraction**3
    # without the keyword the norms amplify it back to O(1) (the reason for the keyword)
    assert _dimer(plain, RADIUS * (1 - 1e-4))[1] >= 1e-2


def test_energy_and_force_are_continuous_across_the_cutoff():
    model = make_model(num_neighbors=float("inf"), valid_radius=RADIUS, smooth_cutoff=True, depth=3)
    step = 1e-4
    distances = RADIUS + step * torch.arange(-20, 21, dtype=torch.float64)
    energies, forces = [], []
    for d in distances.tolist():
        e, _, f = _dimer(model, d, grad=True)
        energies.append(e)
        forces.append(f)
    energies, forces = torch.stack(energies), torch.stack(forces)
    # beyond the radius the nodes do not see each other: constant energy, zero force
    assert torch.all(energies[21:] == energies[21])
    assert forces[21:].abs().max() == 0
    # inside, the energy approaches that constant without a jump, and the force goes to zero
    assert (energies[:21] - energies[21]).abs().max() <= 1e-6
    assert forces[:21].norm(dim=-1).max() <= 1e-3
    # no step larger than the smooth trend: first differences change gradually
    jumps = energies.diff().abs()
    assert jumps.max() <= 1e-7


def test_smooth_cutoff_changes_nothing_by_default():
    a = make_model(seed=3)
    b = make_model(seed=3, smooth_cutoff=False)
    assert a.config == b.config and a.config.smooth_cutoff is False
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
