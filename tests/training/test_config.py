"""Settings, presets and the resume rules; the pieces that make runs reproducible."""

from __future__ import annotations

import pytest
import torch

from equiformer.data import load_embedded
from equiformer.training import PRESETS, ConfigError, TrainConfig
from equiformer.training.config import parse_args, resolve, resolve_resume
from equiformer.training.data import BatchOrder, make_batch
from equiformer.training.files import atomic_path
from equiformer.training.optim import WarmupCosine


def test_defaults_are_the_small_preset_and_flags_override_presets():
    assert resolve({}) == TrainConfig()
    large = resolve(parse_args(["--preset", "large", "--depth", "2"]))
    assert large.dim == PRESETS["large"]["dim"] and large.depth == 2
    assert parse_args(["--dim", "8,4", "--no-progress"]) == {"dim": (8, 4), "progress": False}


@pytest.mark.parametrize("argv, message", [
    (["--data", "a", "--sidechainnet", "b"], "at most one of --data and --sidechainnet"),
    (["--noise", "0"], "--noise must be > 0"),
    (["--dim", "8,4,2"], "--dim needs 1 or --num-degrees (2)"),
    (["--device", "cpu", "--precision", "bf16"], "CUDA only"),
    (["--device", "tpu"], "--device must be one of"),
    # denoising needs the type-1 output (the model crashed on its first step)
    (["--num-degrees", "1", "--dim", "8", "--heads", "2", "--dim-head", "4"],
     "--num-degrees must be >= 2"),
    # inf passed the "> 0" checks, then the run died with a traceback
    (["--noise", "inf"], "--noise must be > 0 and finite"),
    (["--lr", "inf"], "--lr must be > 0 and finite"),
    (["--weight-decay", "inf"], "--weight-decay must be >= 0 and finite"),
    (["--noise", "nan"], "--noise must be > 0 and finite"),
    (["--clip-grad", "nan"], "--clip-grad must be >= 0"),
    (["--threads", "100000"], "--threads must be in 0..1024"),  # torch segfaulted
    (["--seed", str(2**64)], "--seed must be < 2"),  # torch.manual_seed overflowed
    (["--device", "cuda:abc"], "cuda:N (N a GPU index), got 'cuda:abc'"),  # passed, then a traceback
    (["--device", "cuda:"], "--device must be one of"),
])
def test_bad_settings_are_named(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(parse_args(argv))


def test_infinite_radius_and_clip_mean_no_limit():
    config = resolve(parse_args(["--valid-radius", "inf", "--clip-grad", "inf", "--threads",
                                 "1024"]))
    assert config.valid_radius == config.clip_grad == float("inf")


def test_resume_takes_the_checkpoint_config_and_rejects_strict_changes():
    saved = resolve({"lr": 0.01, "steps": 50, "val_every": 5, "out": "a"}).to_dict()
    resumed = resolve_resume(saved, {"resume": True, "out": "b", "log_every": 3})
    assert (resumed.lr, resumed.steps, resumed.val_every) == (0.01, 50, 5)  # inherited
    assert (resumed.out, resumed.log_every, resumed.resume) == ("b", 3, True)  # this run's
    assert resolve_resume(saved, {"lr": 0.01}).lr == 0.01  # repeating a value is fine
    with pytest.raises(ConfigError, match="steps: checkpoint has 50, this run asks for 60"):
        resolve_resume(saved, {"steps": 60})
    with pytest.raises(ConfigError, match="preset: checkpoint has 'small'"):
        resolve_resume(saved, {"preset": "large"})


def test_examples_do_not_depend_on_how_the_batch_is_split():
    chains = load_embedded()[:4]
    seeds = [11, 22, 33, 44]
    whole = make_batch(chains, seeds, 12, 1.0, torch.float64)
    halves = [make_batch(chains[:2], seeds[:2], 12, 1.0, torch.float64),
              make_batch(chains[2:], seeds[2:], 12, 1.0, torch.float64)]
    torch.testing.assert_close(torch.cat([h.noisy for h in halves]), whole.noisy, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([h.batch.coords for h in halves]), whole.batch.coords,
                               rtol=0, atol=0)
    again = make_batch(chains, [11, 22, 33, 45], 12, 1.0, torch.float64)
    assert torch.equal(again.noisy[:3], whole.noisy[:3]) and not torch.equal(again.noisy[3], whole.noisy[3])


def test_batch_order_covers_each_epoch_and_resumes_from_its_state():
    order = BatchOrder(5, seed=1)
    first = order.next(3) + order.next(3)  # crosses into the second epoch
    assert sorted(i for i, _ in first[:5]) == [0, 1, 2, 3, 4] and order.epoch == 2
    state = order.state_dict()
    expected = order.next(7)
    restored = BatchOrder(5, seed=999)
    restored.load_state_dict(state)
    assert restored.next(7) == expected


def test_schedule_warms_up_then_decays_to_the_floor():
    schedule = WarmupCosine(warmup=4, total=20, floor=0.1)
    values = [schedule(step) for step in range(21)]
    assert values[0] == pytest.approx(0.2) and values[3] == pytest.approx(0.8)
    assert values[4] == pytest.approx(1.0) and values[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as temporary:
        temporary.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]
