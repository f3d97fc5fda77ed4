"""Learning-rate schedule and SGD against hand-written references (LDAM/FBL code, torch.optim.SGD)."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fbl_jax.defaults import get_default_config
from fbl_jax.train import optimizer as optim


def reference_lr(step: int, spe: int, base: float = 0.1) -> float:
    """The LDAM/FBL CIFAR adjust_learning_rate, per step, written from the paper's protocol."""
    epoch = step // spe
    if epoch < 5:
        return base * (1 + step) / (5 * spe)
    if epoch >= 180:
        return base * 0.0001
    if epoch >= 160:
        return base * 0.01
    return base


def test_cifar_step_schedule_matches_reference():
    cfg = get_default_config().optimizer
    spe = 7
    sched = optim.make_lr_schedule(cfg, spe, 200)
    for step in [
        0,
        1,
        5,
        34,
        35,
        36,
        100,
        160 * spe - 1,
        160 * spe,
        180 * spe - 1,
        180 * spe,
        1399,
    ]:
        assert float(sched(step)) == pytest.approx(reference_lr(step, spe), rel=1e-6), step


def test_large_dataset_schedule_divides_by_ten():
    cfg = get_default_config().optimizer
    cfg.learning_rate = 0.2
    cfg.warmup_epochs = 0.0
    cfg.decay_epochs = (120, 160)
    cfg.decay_multipliers = (0.1, 0.01)
    sched = optim.make_lr_schedule(cfg, 10, 180)
    assert float(sched(0)) == pytest.approx(0.2)
    assert float(sched(1199)) == pytest.approx(0.2)
    assert float(sched(1200)) == pytest.approx(0.02)
    assert float(sched(1600)) == pytest.approx(0.002)


def test_bad_schedule_values_raise():
    cfg = get_default_config().optimizer
    cfg.schedule = "poly"
    with pytest.raises(ValueError, match="schedule"):
        optim.make_lr_schedule(cfg, 10, 10)
    cfg = get_default_config().optimizer
    cfg.decay_multipliers = (0.1,)
    with pytest.raises(ValueError, match="same length"):
        optim.make_lr_schedule(cfg, 10, 10)


def test_sgd_matches_torch_semantics():
    """torch.optim.SGD: g ← g + wd·p; buf ← μ·buf + g; p ← p − lr·buf (first step buf = g)."""
    cfg = ml_collections.ConfigDict(
        dict(name="sgd", momentum=0.9, nesterov=False, weight_decay=2e-4)
    )
    lrs = [0.05, 0.1, 0.02]
    tx = optim.make_optimizer(cfg, lambda s: jnp.asarray(lrs)[s], {"w": jnp.zeros(3)})
    rng = np.random.default_rng(0)
    p = rng.normal(size=3)
    params = {"w": jnp.asarray(p, jnp.float32)}
    state = tx.init(params)
    buf = np.zeros(3)
    for t in range(3):
        g = rng.normal(size=3)
        d = g + 2e-4 * p
        buf = d if t == 0 else 0.9 * buf + d
        p = p - lrs[t] * buf
        upd, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = optax.apply_updates(params, upd)
    np.testing.assert_allclose(np.asarray(params["w"]), p, rtol=1e-5, atol=1e-6)


def test_frozen_parameters_do_not_move():
    cfg = get_default_config().optimizer
    params = {
        "layer1_0": {"w": jnp.ones(2)},
        "layer4_0": {"w": jnp.ones(2)},
        "head": {"b": jnp.ones(1)},
    }
    tx = optim.make_optimizer(cfg, optax.constant_schedule(0.1), params, ("layer1",))
    grads = {
        "layer1_0": {"w": jnp.ones(2)},
        "layer4_0": {"w": jnp.ones(2)},
        "head": {"b": jnp.ones(1)},
    }
    upd, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, upd)
    np.testing.assert_array_equal(new["layer1_0"]["w"], np.ones(2))
    assert float(new["layer4_0"]["w"][0]) == pytest.approx(1 - 0.1 * (1 + 2e-4))
    with pytest.raises(ValueError, match="freezes every parameter"):
        optim.make_optimizer(
            cfg, optax.constant_schedule(0.1), params, ("layer1", "layer4", "head")
        )
