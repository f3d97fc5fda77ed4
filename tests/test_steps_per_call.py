"""Several train steps per compiled call: the automatic choice, its validation, and that a run
with k steps per call ends with the parameters of the same run made one step at a time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_helpers import final_params, read_records, tiny_config

from fbl_jax import defaults
from fbl_jax.train import steps as train_steps
from fbl_jax.train import train_and_evaluate


@pytest.mark.parametrize(
    "value, backend, pipeline, want",
    [
        (0, "cpu", "device", defaults.CPU_STEPS_PER_CALL),
        (0, "gpu", "device", defaults.LOOP),
        (0, "tpu", "device", defaults.LOOP),
        (0, "gpu", "tf", 1),
        (0, "cpu", "tf", 1),
        (3, "gpu", "device", 3),
        (1, "cpu", "device", 1),
    ],
)
def test_resolve_steps_per_call(value, backend, pipeline, want):
    config = defaults.get_default_config()
    config.steps_per_call, config.data.pipeline = value, pipeline
    assert defaults.resolve_steps_per_call(config, backend) == want


@pytest.mark.parametrize(
    "value, pipeline, match",
    [(-2, "device", "integer >= -1"), (2, "tf", "pipeline"), (-1, "tf", "pipeline")],
)
def test_impossible_steps_per_call_is_an_error(value, pipeline, match):
    config = tiny_config(steps_per_call=value)
    config.data.pipeline = pipeline
    with pytest.raises(ValueError, match=match):
        defaults.validate_config(config)


# One epoch at lr 0.01: XLA compiles a looped step differently (~1e-7 apart after 5 steps), and
# at lr 0.1 this tiny net amplifies that ~x10 a step from step 9 (measured).
SHORT = {"num_epochs": 1, "optimizer.learning_rate": 0.01}


def _run(workdir, k):
    train_and_evaluate(tiny_config(steps_per_call=k, **SHORT), workdir)
    records = [r for r in read_records(workdir) if r["type"] == "train"]
    return final_params(workdir), records


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    """The reference both multi-step runs must end like: one step per call."""
    return _run(tmp_path_factory.mktemp("k1"), 1)


def test_scanned_steps_give_the_one_step_result(tmp_path, one_step_run):
    """15 steps, 3 per call, logging every 5: calls of 3 and leftover single steps."""
    (_, params1), _ = one_step_run
    (_, params3), _ = _run(tmp_path / "k3", 3)
    leaves1, leaves3 = (jax.tree_util.tree_leaves(p) for p in (params1, params3))
    assert len(leaves1) == len(leaves3) > 0
    for a, b in zip(leaves1, leaves3):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unrolled_and_looped_scan_agree():
    def step(state, data):
        new = state * data + 1.0
        return new, {"value": new}

    data = np.float32(0.5)
    outs = [
        train_steps.make_multi_step(step, 4, unroll=u)(np.float32(2.0), data) for u in (True, False)
    ]
    np.testing.assert_allclose(outs[0][0], outs[1][0])
    np.testing.assert_allclose(outs[0][1]["value"], [2.0, 2.0, 2.0, 2.0])  # 2·0.5+1 = 2 each time


def test_loop_steps_reduce_like_the_steps_they_run():
    """n steps in one while loop: the state after n steps, mean loss, last lr, n, and the
    first non-finite step named — against the same steps written out in Python."""

    def step(state, data):
        x, t = state
        loss = jnp.where(t == 5, jnp.nan, x * data)
        metrics = {"loss": loss, "train_top1": x, "lr": t * 0.5, "alpha": t * 0.0, "step": t}
        return (x * data + 1.0, t + 1), metrics

    loop = train_steps.make_loop_steps(step)
    for n, start in ((4, 0), (7, 0), (3, 10)):
        state = (jnp.float32(2.0), jnp.int32(start))
        (x, t), m = jax.jit(loop)(state, jnp.float32(0.5), n)
        xs, ref = 2.0, []
        for i in range(n):
            ref.append((xs * 0.5 if start + i != 5 else np.nan, xs, start + i))
            xs = xs * 0.5 + 1.0
        assert float(x) == pytest.approx(xs) and int(t) == start + n
        assert float(m["count"][0]) == n and float(m["lr"][0]) == (start + n - 1) * 0.5
        assert float(m["train_top1"][0]) == pytest.approx(np.mean([r[1] for r in ref]))
        if any(start + i == 5 for i in range(n)):
            assert np.isnan(m["loss"][0]) and int(m["step"][0]) == 5
        else:
            assert float(m["loss"][0]) == pytest.approx(np.mean([r[0] for r in ref]))
            assert int(m["step"][0]) == start + n - 1


def test_loop_mode_run_gives_the_one_step_result(tmp_path, one_step_run):
    """steps_per_call=-1 (the accelerators' default): same parameters and train records."""
    (_, params1), records1 = one_step_run
    (_, params_loop), records_loop = _run(tmp_path / "loop", -1)
    for a, b in zip(*(jax.tree_util.tree_leaves(p) for p in (params1, params_loop))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert [r["step"] for r in records1] == [r["step"] for r in records_loop] == [5, 10, 15]
    for a, b in zip(records1, records_loop):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-6)
