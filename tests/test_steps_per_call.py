"""Several train steps per compiled call: the automatic choice, its validation, and that a run
with k steps per call ends with the parameters of the same run made one step at a time."""

import jax
import numpy as np
import pytest
from train_helpers import final_params, tiny_config

from fbl_jax import defaults, train_steps
from fbl_jax.train import train_and_evaluate


@pytest.mark.parametrize(
    "value, backend, pipeline, want",
    [
        (0, "cpu", "device", defaults.CPU_STEPS_PER_CALL),
        (0, "gpu", "device", 1),
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
    [(-1, "device", "integer >= 0"), (2, "tf", "pipeline")],
)
def test_impossible_steps_per_call_is_an_error(value, pipeline, match):
    config = tiny_config(steps_per_call=value)
    config.data.pipeline = pipeline
    with pytest.raises(ValueError, match=match):
        defaults.validate_config(config)


def test_scanned_steps_give_the_one_step_result(tmp_path):
    """15 steps per epoch, 3 per call, logging every 5: calls of 3 and leftover single steps."""
    params = {}
    for k in (1, 3):
        train_and_evaluate(tiny_config(steps_per_call=k), tmp_path / f"k{k}")
        params[k] = final_params(tmp_path / f"k{k}")
    leaves1, leaves3 = (jax.tree_util.tree_leaves(params[k]) for k in (1, 3))
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
