"""The training loop's arithmetic (training/loop.py), worked out by hand: how many optimiser
steps a run plans and the DeepSpeed config it builds (pure functions: no Ray, no model), and
how a worker's rows become micro-batches (a real Ray Dataset)."""

import numpy as np
import pytest

from biolord_ray.config import TrainConfig
from biolord_ray.training import loop


def _tcfg(**changes):
    # An explicit precision: "auto" would depend on this machine's CPU.
    return TrainConfig(**{"precision": "fp32", "max_steps": None, **changes})


@pytest.mark.parametrize("n_rows, changes, expected", [
    # 1000 rows / 2 workers = 500 each; 500 // 32 = 15 full batches (the 20 left over dropped).
    (1000, dict(num_workers=2, batch_size=32), (15, 15)),
    # 15 micro-batches // 2 accumulated = 7 steps an epoch (the odd micro-batch unused) x 3.
    (1000, dict(num_workers=2, batch_size=32, grad_accumulation=2, epochs=3), (7, 21)),
    # The cap cuts the 21 steps to 10, and a cap above the plan changes nothing.
    (1000, dict(num_workers=2, batch_size=32, grad_accumulation=2, epochs=3, max_steps=10),
     (7, 10)),
    (1000, dict(num_workers=2, batch_size=32, grad_accumulation=2, epochs=3, max_steps=100),
     (7, 21)),
    # 1001 rows / 3 workers = 333 each (equal shares); 333 // 16 = 20; 20 // 3 = 6; x 2.
    (1001, dict(num_workers=3, batch_size=16, grad_accumulation=3, epochs=2), (6, 12)),
    # Exactly one step: 64 rows, 2 workers x 32.
    (64, dict(num_workers=2, batch_size=32, max_steps=1), (1, 1)),
])
def test_plan_steps(n_rows, changes, expected):
    assert loop.plan_steps(n_rows, _tcfg(**changes)) == expected


def test_plan_steps_refuses_a_plan_without_a_step():
    # 63 rows / 2 workers = 31 each: not one batch of 32.
    with pytest.raises(ValueError, match="63 training rows do not fill one step of batch_size "
                                         "32 x 2 workers x grad_accumulation 1"):
        loop.plan_steps(63, _tcfg(num_workers=2, batch_size=32))
    # 4 micro-batches of 32 per worker do not make one step of 5 accumulated.
    with pytest.raises(ValueError, match="grad_accumulation 5"):
        loop.plan_steps(256, _tcfg(num_workers=2, batch_size=32, grad_accumulation=5))
    # max_steps=0 once meant "no cap"; load_config refuses it, and so does the plan.
    with pytest.raises(ValueError, match="max_steps 0: must be positive, or None"):
        loop.plan_steps(1000, _tcfg(num_workers=2, batch_size=32, max_steps=0))


def test_deepspeed_config_batches_schedule_and_precision():
    tcfg = _tcfg(batch_size=16, grad_accumulation=4, lr=2e-5, weight_decay=0.01,
                 warmup_ratio=0.1, zero_stage=3, grad_clip=0.5)
    config = loop.deepspeed_config(tcfg, world_size=3, total_steps=250)
    assert config["train_micro_batch_size_per_gpu"] == 16
    assert config["gradient_accumulation_steps"] == 4
    assert config["train_batch_size"] == 16 * 4 * 3 == 192  # DeepSpeed checks this product
    assert config["gradient_clipping"] == 0.5
    assert config["zero_optimization"] == {"stage": 3}
    assert not config["bf16"]["enabled"] and not config["torch_autocast"]["enabled"]
    assert config["optimizer"] == {"type": "AdamW", "params": {
        "lr": 2e-5, "weight_decay": 0.01, "torch_adam": True}}  # CPU: torch's AdamW
    assert config["scheduler"] == {"type": "WarmupDecayLR", "params": {
        "warmup_min_lr": 0.0, "warmup_max_lr": 2e-5, "warmup_type": "linear",
        "warmup_num_steps": 25, "total_num_steps": 250}}  # 10% of 250 steps warm up

    bf16 = loop.deepspeed_config(_tcfg(precision="bf16", use_gpu=True), 1, 10)
    assert bf16["bf16"]["enabled"] and not bf16["torch_autocast"]["enabled"]
    assert bf16["optimizer"]["params"]["torch_adam"] is False  # GPU: DeepSpeed's fused Adam
    mixed = loop.deepspeed_config(_tcfg(precision="bf16-mixed"), 1, 10)
    assert not mixed["bf16"]["enabled"]
    assert mixed["torch_autocast"] == {"enabled": True, "dtype": "bfloat16",
                                       "lower_precision_safe_modules": []}


@pytest.mark.parametrize("warmup_ratio, total_steps, warmup, total", [
    (0.1, 5, 1, 5),    # int(0.5) = 0 warm-up steps: at least 1
    (0.0, 30, 1, 30),  # no warm-up asked: still 1 (DeepSpeed divides by it)
    (0.5, 30, 15, 30),
    (0.1, 0, 1, 1),    # total 0: the schedule still has one step
])
def test_deepspeed_schedule_is_never_empty(warmup_ratio, total_steps, warmup, total):
    params = loop.deepspeed_config(_tcfg(warmup_ratio=warmup_ratio), 2, total_steps)[
        "scheduler"]["params"]
    assert (params["warmup_num_steps"], params["total_num_steps"]) == (warmup, total)


def test_deepspeed_overrides_merge_into_nested_sections():
    overrides = {"zero_optimization": {"offload_optimizer": {"device": "cpu"}},
                 "scheduler": {"params": {"warmup_num_steps": 7}},
                 "gradient_clipping": 0.0, "wall_clock_breakdown": True}
    tcfg = _tcfg(zero_stage=2, deepspeed=overrides)
    config = loop.deepspeed_config(tcfg, world_size=2, total_steps=100)
    # Nested keys are merged (the stage and the rest of the schedule stay) ...
    assert config["zero_optimization"] == {"stage": 2, "offload_optimizer": {"device": "cpu"}}
    assert config["scheduler"]["type"] == "WarmupDecayLR"
    assert config["scheduler"]["params"]["warmup_num_steps"] == 7
    assert config["scheduler"]["params"]["total_num_steps"] == 100
    # ... plain values replace, new keys are added, and the generated rest is unchanged.
    assert config["gradient_clipping"] == 0.0 and config["wall_clock_breakdown"] is True
    without = loop.deepspeed_config(_tcfg(zero_stage=2), world_size=2, total_steps=100)
    changed = {"zero_optimization", "scheduler", "gradient_clipping", "wall_clock_breakdown"}
    assert {k: v for k, v in config.items() if k not in changed} == \
        {k: v for k, v in without.items() if k not in changed}
    assert tcfg.deepspeed == {"zero_optimization": {"offload_optimizer": {"device": "cpu"}},
                              "scheduler": {"params": {"warmup_num_steps": 7}},
                              "gradient_clipping": 0.0, "wall_clock_breakdown": True}


def test_length_grouped_micro_batches_keep_rows_whole_and_pad_less(ray_local):
    """Grouped by length, an epoch has the same number of whole micro-batches as without
    (the last partial one dropped), each row at most once and with its own target, and a
    batch's longest text (what it pads to) is shorter."""
    import ray.data

    lengths = np.random.default_rng(0).choice([3, 5, 8, 40, 60], size=203)
    # Each text distinct (its row number, then padding to its length); the target names both.
    rows = [{"text": f"{i:03d}".ljust(int(n), "x"), "target": np.array([i, n], np.float32)}
            for i, n in enumerate(lengths)]
    tcfg = _tcfg(batch_size=8)
    dataset = ray.data.from_items(rows, override_num_blocks=3)
    epochs = {column: list(loop.micro_batches(dataset, tcfg, lambda b: b, 7, column))
              for column in (None, "text")}
    for column, batches in epochs.items():
        assert len(batches) == 203 // 8, column
        assert all(len(b["text"]) == 8 for b in batches), column
        texts = [t for b in batches for t in b["text"]]
        targets = np.concatenate([np.asarray(b["target"]) for b in batches])
        # Rows stay whole: each text with its own target.
        assert [[int(t[:3]), len(t)] for t in texts] == targets.astype(int).tolist(), column
        # Every kept row once: 200 distinct of the 203, the other 3 dropped.
        assert len(set(texts)) == len(texts) == 200, column
    padded = {column: sum(8 * max(len(t) for t in b["text"]) for b in batches)
              for column, batches in epochs.items()}
    assert padded["text"] < 0.7 * padded[None], padded
    # The same seed, the same batches (a resumed run skips the ones it trained on).
    again = list(loop.micro_batches(dataset, tcfg, lambda b: b, 7, "text"))
    assert [list(b["text"]) for b in again] == [list(b["text"]) for b in epochs["text"]]
