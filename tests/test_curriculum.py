"""α(t) schedules against hand-computed values (literals, not the code under test)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fbl_jax.losses import curriculum

T = 200.0
SIN_PI_4 = 0.7071067811865476

# schedule -> (α at t=0, α at t=T/2, α at t=T), worked out by hand.
EXPECTED = {
    "parabolic": (0.0, 0.25, 1.0),
    "linear": (0.0, 0.5, 1.0),
    "sine": (0.0, SIN_PI_4, 1.0),
    "cosine": (0.0, 1.0 - SIN_PI_4, 1.0),  # 0.2928932188134524
    "linear_decrease": (1.0, 0.5, 0.0),
    "constant": (1.0, 1.0, 1.0),
    # (t / (200 − 10))²: 0, (100/190)² = 0.27700831024930744, (200/190)² = 1.1080332409972298
    "authors_code": (0.0, 0.27700831024930744, 1.1080332409972298),
}


def test_every_schedule_is_covered():
    assert set(EXPECTED) == set(curriculum.SCHEDULES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schedule_at_start_middle_end(name):
    got = [float(curriculum.alpha(name, t, T)) for t in (0.0, T / 2, T)]
    np.testing.assert_allclose(got, EXPECTED[name], rtol=1e-6, atol=1e-7)


def test_authors_code_hits_one_at_T_minus_offset_and_is_not_capped():
    assert float(curriculum.alpha("authors_code", 190.0, 200.0)) == pytest.approx(1.0, rel=1e-6)
    assert float(curriculum.alpha("authors_code", 200.0, 200.0)) == pytest.approx(1.108, abs=1e-3)
    # A different offset: (50 / (100 − 20))² = 0.390625.
    assert float(curriculum.alpha("authors_code", 50.0, 100.0, offset=20.0)) == pytest.approx(
        0.390625, rel=1e-6
    )


def test_paper_forms_clip_t_over_T():
    # Past the end the paper forms stay at their t = T value; before the start at t = 0.
    assert float(curriculum.alpha("parabolic", 250.0, T)) == pytest.approx(1.0)
    assert float(curriculum.alpha("linear_decrease", 250.0, T)) == pytest.approx(0.0)
    assert float(curriculum.alpha("sine", -5.0, T)) == pytest.approx(0.0)
    # A fractional quarter point: (50.5 / 200)² = 0.06375625.
    assert float(curriculum.alpha("parabolic", 50.5, T)) == pytest.approx(0.06375625, rel=1e-6)


def test_alpha_accepts_arrays_of_epochs():
    got = curriculum.alpha("linear", jnp.array([0.0, 50.0, 150.0]), T)
    np.testing.assert_allclose(np.asarray(got), [0.0, 0.25, 0.75], rtol=1e-6)


def test_traced_epoch_compiles_once():
    traces = []

    @jax.jit
    def f(epoch):
        traces.append(1)
        return curriculum.alpha("cosine", epoch, T)

    a = f(jnp.float32(0.0))
    b = f(jnp.float32(100.0))
    assert len(traces) == 1
    assert float(a) == pytest.approx(0.0, abs=1e-7)
    assert float(b) == pytest.approx(1.0 - SIN_PI_4, rel=1e-6)


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="quadratic") as err:
        curriculum.alpha("quadratic", 1.0, T)
    assert "parabolic" in str(err.value) and "authors_code" in str(err.value)


def test_offset_not_below_num_epochs_raises():
    with pytest.raises(ValueError, match="offset"):
        curriculum.alpha("authors_code", 1.0, 10.0, offset=10.0)
    with pytest.raises(ValueError, match="num_epochs"):
        curriculum.alpha("linear", 1.0, 0.0)
