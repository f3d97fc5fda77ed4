"""Learning-rate schedule and SGD against hand-written references (LDAM/FBL code, torch.optim.SGD)."""

import jax
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


def ldam_adjust_learning_rate(epoch: int, base: float = 0.1) -> float:
    """LDAM-DRW's adjust_learning_rate (copied by the FBL authors' CIFAR code): one lr per epoch,
    set before its first step; `epoch` is 0-based."""
    epoch = epoch + 1
    if epoch <= 5:
        return base * epoch / 5
    if epoch > 180:
        return base * 0.0001
    if epoch > 160:
        return base * 0.01
    return base


def test_per_epoch_warmup_is_the_authors_staircase():
    spe = 97
    cfg = get_default_config().optimizer
    cfg.warmup_per_epoch = True
    sched = optim.make_lr_schedule(cfg, spe, 200)
    by_hand = {
        0: 0.02,
        spe - 1: 0.02,
        spe: 0.04,
        2 * spe + 50: 0.06,
        4 * spe - 1: 0.08,
        4 * spe + 3: 0.1,
        5 * spe: 0.1,
        160 * spe - 1: 0.1,
        160 * spe: 0.001,
        180 * spe: 0.00001,
        200 * spe - 1: 0.00001,
    }
    for step, lr in by_hand.items():
        assert float(sched(step)) == pytest.approx(lr, rel=1e-6), step
    # every step of the run, traced (as the train step calls it) against the epoch formula
    steps = np.arange(200 * spe)
    want = np.array([ldam_adjust_learning_rate(e) for e in steps // spe])
    got = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(steps, jnp.int32)))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the per-step ramp (the default; float32 interpolation) differs inside the warm-up only
    ramp = optim.make_lr_schedule(get_default_config().optimizer, spe, 200)
    assert float(ramp(0)) == pytest.approx(0.1 / (5 * spe), rel=1e-5)
    assert float(ramp(4 * spe + 3)) == pytest.approx(0.1 * (4 * spe + 4) / (5 * spe), rel=1e-5)
    assert float(ramp(5 * spe)) == pytest.approx(0.1, rel=1e-6)


def test_per_epoch_warmup_takes_whole_epochs_only():
    cfg = get_default_config().optimizer
    cfg.warmup_per_epoch = True
    cfg.warmup_epochs = 2.5  # epoch 2 would start at lr·3/2.5, above the base lr
    with pytest.raises(ValueError, match="whole number"):
        optim.make_lr_schedule(cfg, 10, 20)
    cfg.warmup_epochs = 2.0
    cfg.decay_epochs, cfg.decay_multipliers = (), ()
    sched = optim.make_lr_schedule(cfg, 10, 20)
    assert [float(sched(s)) for s in (0, 9, 10, 19, 20)] == pytest.approx([0.05] * 2 + [0.1] * 3)
    cfg.warmup_epochs = 0.0  # no warm-up at all
    assert float(optim.make_lr_schedule(cfg, 10, 20)(0)) == pytest.approx(0.1)


def test_optimizer_config_without_the_flag_ramps_per_step():
    """fbl-decouple's optimizer configs predate warmup_per_epoch: the per-step ramp."""
    fields = get_default_config().optimizer.to_dict()
    del fields["warmup_per_epoch"]
    sched = optim.make_lr_schedule(ml_collections.ConfigDict(fields), 10, 200)
    assert float(sched(0)) == pytest.approx(0.1 / 50, rel=1e-5)


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
