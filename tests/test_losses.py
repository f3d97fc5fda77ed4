"""Loss formulas and make_loss against float64 NumPy references written here from the formulas."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fbl_jax import losses

COUNTS = [500, 200, 80, 30, 10]
B, C, D = 8, len(COUNTS), 6
RTOL = 1e-5


# ----------------------------------------------------------------------------- NumPy references


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def np_weighted_mean(per_example, y, w):
    if w is None:
        return per_example.mean()
    wy = np.asarray(w, np.float64)[y]
    return (wy * per_example).sum() / wy.sum()


def np_ce(z, y, w=None):
    nll = -np_log_softmax(z)[np.arange(len(y)), y]
    return np_weighted_mean(nll, y, w)


def np_lambda(counts):
    n = np.asarray(counts, np.float64)
    return np.log(n.max()) - np.log(n)


def np_fbl_logits(z, f, lam, alpha, eps=1e-12):
    norm = np.sqrt((f**2).sum(axis=1, keepdims=True))
    return z - alpha * lam[None, :] / (norm + eps)


def np_focal(z, y, gamma, w=None):
    p_t = np_softmax(z)[np.arange(len(y)), y]
    return np_weighted_mean(-((1 - p_t) ** gamma) * np.log(p_t), y, w)


def np_cb_weights(counts, beta):
    n = np.asarray(counts, np.float64)
    w = (1 - beta) / (1 - beta**n)
    return w / w.sum() * len(n)


def np_ldam_adjusted(z, y, counts, max_m, s):
    m = np.asarray(counts, np.float64) ** -0.25
    m = m * max_m / m.max()
    adj = z.copy()
    adj[np.arange(len(y)), y] -= m[y]
    return s * adj


def np_log_prior(counts):
    n = np.asarray(counts, np.float64)
    return np.log(n / n.sum())


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(B, C)) * 2.0
    f = rng.normal(size=(B, D))
    y = rng.integers(0, C, size=B)
    y[:C] = np.arange(C)  # every class present
    w = rng.uniform(0.2, 3.0, size=C)
    return z, f, y, w


def f32(x):
    return jnp.asarray(x, jnp.float32)


def close(got, want, rtol=RTOL, atol=1e-6):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- λ


def test_fbl_lambda_paper_form():
    lam = losses.fbl_lambda(COUNTS)
    assert lam.dtype == jnp.float32 and lam.shape == (C,)
    # log 500 − log n_j by hand: 0, log 2.5, log 6.25, log(50/3), log 50.
    close(lam, [0.0, math.log(2.5), math.log(6.25), math.log(50 / 3), math.log(50.0)])
    assert float(lam[0]) == 0.0  # exactly zero for the largest class


def test_fbl_lambda_normalized_and_scaled():
    lam = losses.fbl_lambda(COUNTS, normalize=True, scale=60.0)
    close(lam, np_lambda(COUNTS) / math.log(50.0) * 60.0)
    assert float(lam.max()) == pytest.approx(60.0)
    # Largest class not first, scale on the paper form too.
    close(losses.fbl_lambda([10, 40, 20], scale=2.0), [2 * math.log(4), 0.0, 2 * math.log(2)])


def test_fbl_lambda_balanced_gives_zeros_not_nan():
    lam = losses.fbl_lambda([7, 7, 7], normalize=True, scale=150.0)
    assert np.array_equal(np.asarray(lam), np.zeros(3, np.float32))


@pytest.mark.parametrize("bad", [[5, 0, 3], [5, -2, 3]])
def test_non_positive_count_raises(bad):
    with pytest.raises(ValueError, match=r"positive.*\[1\]"):
        losses.fbl_lambda(bad)
    with pytest.raises(ValueError, match="positive"):
        losses.make_loss(ml_collections.ConfigDict({"name": "ce"}), bad, 10)


def test_negative_scale_raises():
    with pytest.raises(ValueError, match="scale"):
        losses.fbl_lambda(COUNTS, scale=-1.0)


# ----------------------------------------------------------------------------- FBL value / grads


@pytest.mark.parametrize("weighted", [False, True])
def test_fbl_loss_matches_numpy(batch, weighted):
    z, f, y, w = batch
    w = w if weighted else None
    lam = np_lambda(COUNTS)
    alpha = 0.7
    close(
        losses.feature_balanced_logits(f32(z), f32(f), f32(lam), alpha),
        np_fbl_logits(z, f, lam, alpha),
    )
    got = losses.feature_balanced_loss(
        f32(z), f32(f), jnp.asarray(y), f32(lam), alpha, None if w is None else f32(w)
    )
    close(got, np_ce(np_fbl_logits(z, f, lam, alpha), y, w))


def np_fbl_grads(z, f, y, lam, alpha, w, eps=1e-12):
    """Analytic gradients of the (weighted) FBL w.r.t. logits and features."""
    zb = np_fbl_logits(z, f, lam, alpha, eps)
    onehot = np.eye(z.shape[1])[y]
    wy = np.ones(len(y)) if w is None else np.asarray(w)[y]
    g_zb = (np_softmax(zb) - onehot) * (wy / wy.sum())[:, None]  # dL/dz^b = dL/dz
    norm = np.sqrt((f**2).sum(axis=1, keepdims=True))
    # z^b_ij = z_ij − α λ_j / (‖f_i‖ + ε)  ⇒  ∂z^b_ij/∂f_i = α λ_j f_i / ((‖f_i‖ + ε)² ‖f_i‖)
    coef = (g_zb * alpha * lam[None, :]).sum(axis=1, keepdims=True) / (norm + eps) ** 2
    return g_zb, coef * f / norm


@pytest.mark.parametrize("weighted", [False, True])
def test_fbl_gradients_match_analytic(batch, weighted):
    z, f, y, w = batch
    w = w if weighted else None
    lam = np_lambda(COUNTS)
    alpha = 1.3

    def loss(zz, ff):
        return losses.feature_balanced_loss(
            zz, ff, jnp.asarray(y), f32(lam), alpha, None if w is None else f32(w)
        )

    gz, gf = jax.grad(loss, argnums=(0, 1))(f32(z), f32(f))
    want_z, want_f = np_fbl_grads(z, f, y, lam, alpha, w)
    close(gz, want_z, rtol=1e-4, atol=1e-6)
    close(gf, want_f, rtol=1e-4, atol=1e-6)


def test_fbl_feature_gradient_finite_differences_x64(batch):
    z, f, y, w = batch
    lam = np_lambda(COUNTS)
    alpha, h = 0.9, 1e-6

    def ref(ff):
        return np_ce(np_fbl_logits(z, ff, lam, alpha), y, w)

    fd = np.zeros_like(f)
    for idx in np.ndindex(f.shape):
        e = np.zeros_like(f)
        e[idx] = h
        fd[idx] = (ref(f + e) - ref(f - e)) / (2 * h)
    with jax.enable_x64(True):
        g = jax.grad(
            lambda ff: losses.feature_balanced_loss(
                jnp.asarray(z), ff, jnp.asarray(y), jnp.asarray(lam), alpha, jnp.asarray(w)
            )
        )(jnp.asarray(f))
        assert g.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-6, atol=1e-9)


def test_alpha_zero_is_exactly_ce(batch):
    z, f, y, w = batch
    lam = f32(np_lambda(COUNTS))
    fbl = losses.feature_balanced_loss(f32(z), f32(f), jnp.asarray(y), lam, 0.0, f32(w))
    ce = losses.cross_entropy_loss(f32(z), jnp.asarray(y), f32(w))
    assert float(fbl) == float(ce)
    close(ce, np_ce(z, y, w))


def test_zero_features_give_finite_loss_and_grads(batch):
    z, _, y, _ = batch
    f = np.zeros((B, D))
    lam = f32(np_lambda(COUNTS))

    def loss(zz, ff):
        return losses.feature_balanced_loss(zz, ff, jnp.asarray(y), lam, 1.0)

    value, (gz, gf) = jax.value_and_grad(loss, argnums=(0, 1))(f32(z), f32(f))
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(gz))) and np.all(np.isfinite(np.asarray(gf)))
    # The penalty dominates: every class with λ > 0 is pushed down by λ/ε, so the loss of a
    # sample of class j ≈ λ_j / 1e-12 (class 0 with λ = 0 wins the softmax, loss ≈ 0).
    big = np_lambda(COUNTS)[y] / 1e-12
    assert float(value) == pytest.approx(big.mean(), rel=1e-3)


def test_lam_shape_mismatch_raises(batch):
    z, f, _, _ = batch
    with pytest.raises(ValueError, match="lam"):
        losses.feature_balanced_logits(f32(z), f32(f), jnp.zeros(C + 1), 1.0)


# ----------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_numpy(batch, weighted):
    z, _, y, w = batch
    w = w if weighted else None
    got = losses.cross_entropy_loss(f32(z), jnp.asarray(y), None if w is None else f32(w))
    close(got, np_ce(z, y, w))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_matches_numpy(batch, gamma, weighted):
    z, _, y, w = batch
    w = w if weighted else None
    got = losses.focal_loss(f32(z), jnp.asarray(y), gamma, None if w is None else f32(w))
    close(got, np_focal(z, y, gamma, w))


def test_focal_confident_sample_has_finite_gradient():
    z = f32([[60.0, 0.0, 0.0]])  # p_t == 1 in float32
    g = jax.grad(lambda zz: losses.focal_loss(zz, jnp.array([0]), 0.5))(z)
    assert np.all(np.isfinite(np.asarray(g)))


def test_focal_negative_gamma_raises(batch):
    z, _, y, _ = batch
    with pytest.raises(ValueError, match="gamma"):
        losses.focal_loss(f32(z), jnp.asarray(y), -1.0)


def test_class_balanced_weights():
    # Hand-checkable case: β = 0.5, counts 1 and 2: raw (0.5/0.5, 0.5/0.75) = (1, 2/3), sum 5/3,
    # normalised to sum C = 2: (6/5, 4/5).
    close(losses.class_balanced_weights([1, 2], beta=0.5), [1.2, 0.8])
    close(losses.class_balanced_weights(COUNTS, 0.9999), np_cb_weights(COUNTS, 0.9999))
    close(losses.class_balanced_weights(COUNTS, 0.0), np.ones(C))
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"beta.*\[0, 1\)"):
            losses.class_balanced_weights(COUNTS, bad)


def test_drw_weights_switch_at_start_epoch():
    cb = np_cb_weights(COUNTS, 0.9999)
    close(losses.drw_weights(COUNTS, 159.99, 160), np.ones(C))
    close(losses.drw_weights(COUNTS, 160.0, 160), cb)
    close(losses.drw_weights(COUNTS, jnp.float32(3.0), 2.5), cb)


@pytest.mark.parametrize("weighted", [False, True])
def test_ldam_matches_numpy_and_gradient(batch, weighted):
    z, _, y, w = batch
    w = w if weighted else None
    z = np.tanh(z)  # cosine logits in [−1, 1]
    max_m, s = 0.4, 20.0
    wj = None if w is None else f32(w)

    def loss(zz):
        return losses.ldam_loss(zz, jnp.asarray(y), COUNTS, max_m, s, wj)

    adj = np_ldam_adjusted(z, y, COUNTS, max_m, s)
    close(loss(f32(z)), np_ce(adj, y, w))
    # ∂/∂z of CE(s·(z − m_y e_y)) = s · (softmax − onehot) · w_{y_i} / Σ w.
    wy = np.ones(B) if w is None else w[y]
    want = s * (np_softmax(adj) - np.eye(C)[y]) * (wy / wy.sum())[:, None]
    close(jax.grad(loss)(f32(z)), want, rtol=1e-4)


def test_ldam_margin_largest_for_rarest_class():
    m = np.asarray(losses.ldam_margins(COUNTS, 0.5))
    # 0.5 · (n_j / n_min)^(−1/4): rarest class gets exactly max_m; 500 vs 10 → 0.5 · 50^(−1/4).
    close(m[-1], 0.5)
    close(m[0], 0.5 * 50**-0.25)


@pytest.mark.parametrize("weighted", [False, True])
def test_logit_adjusted_and_balanced_softmax(batch, weighted):
    z, _, y, w = batch
    w = w if weighted else None
    wj = None if w is None else f32(w)
    lp = np_log_prior(COUNTS)
    close(
        losses.logit_adjusted_loss(f32(z), jnp.asarray(y), COUNTS, 0.6, wj),
        np_ce(z + 0.6 * lp, y, w),
    )
    close(losses.balanced_softmax_loss(f32(z), jnp.asarray(y), COUNTS, wj), np_ce(z + lp, y, w))


def test_posthoc_logit_adjust(batch):
    z = batch[0]
    close(losses.posthoc_logit_adjust(f32(z), COUNTS, 1.5), z - 1.5 * np_log_prior(COUNTS))
    # τ = 1 with counts (3, 1): log π = (log 0.75, log 0.25).
    close(
        losses.posthoc_logit_adjust(f32([[0.0, 0.0]]), [3, 1], 1.0),
        [[-math.log(0.75), -math.log(0.25)]],
    )


@pytest.mark.parametrize(
    "check, good, bad, match",
    [
        (losses.check_beta, (0.0, 0.9999), (1.0, -0.1, math.nan), r"beta.*\[0, 1\)"),
        (losses.check_scale, (0.0, 60.0), (-1.0, math.inf), "fbl scale"),
        (losses.check_start_epoch, (0, 160.5), (-1, math.nan), "drw_start_epoch"),
        (losses.check_gamma, (0.0, 2.0), (-0.5, math.inf), "gamma"),
        (losses.check_tau, (-1.0, 0.0, 1.5), (math.nan, math.inf), "tau"),
    ],
)
def test_validation_helpers(check, good, bad, match):
    for value in good:
        check(value)
    for value in bad:
        with pytest.raises(ValueError, match=match):
            check(value)


def test_loss_needs_cosine_head():
    assert [losses.loss_needs_cosine_head(n) for n in losses.LOSS_NAMES] == [
        n in ("ldam", "ldam_drw") for n in losses.LOSS_NAMES
    ]
    with pytest.raises(ValueError, match="valid choices"):
        losses.loss_needs_cosine_head("ldamm")


# ----------------------------------------------------------------------------- make_loss


def cfg(**kw):
    return ml_collections.ConfigDict(kw)


T_EPOCHS = 200


def reference(name, z, f, y, epoch):
    """NumPy value of each named loss under the configs used in test_make_loss_matches_numpy."""
    cb = np_cb_weights(COUNTS, 0.999)
    drw = cb if epoch >= 100 else None
    lp = np_log_prior(COUNTS)
    if name == "ce":
        return np_ce(z, y)
    if name == "focal":
        return np_focal(z, y, 2.0)
    if name == "cb":
        return np_ce(z, y, cb)
    if name == "ldam":
        return np_ce(np_ldam_adjusted(z, y, COUNTS, 0.3, 10.0), y)
    if name == "ldam_drw":
        return np_ce(np_ldam_adjusted(z, y, COUNTS, 0.3, 10.0), y, drw)
    if name == "la":
        return np_ce(z + 0.5 * lp, y)
    if name == "balanced_softmax":
        return np_ce(z + lp, y)
    alpha = (epoch / T_EPOCHS) ** 2  # parabolic
    lam = np_lambda(COUNTS)
    if name == "fbl":
        return np_ce(np_fbl_logits(z, f, lam, alpha), y)
    if name == "fbl_drw":
        return np_ce(np_fbl_logits(z, f, lam, alpha), y, drw)
    raise AssertionError(name)


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
@pytest.mark.parametrize("epoch", [50.0, 150.0])
def test_make_loss_matches_numpy(batch, name, epoch):
    z, f, y, _ = batch
    if name.startswith("ldam"):
        z = np.tanh(z)
    config = cfg(
        name=name,
        focal_gamma=2.0,
        cb_beta=0.999,
        ldam_max_m=0.3,
        ldam_s=10.0,
        drw_start_epoch=100,
        la_tau=0.5,
        curriculum="parabolic",
        fbl_form="paper",
    )
    loss_fn = losses.make_loss(config, COUNTS, T_EPOCHS)
    loss, aux = loss_fn(f32(z), f32(f), jnp.asarray(y), jnp.float32(epoch))
    close(loss, reference(name, z, f, y, epoch))
    want_alpha = (epoch / T_EPOCHS) ** 2 if name.startswith("fbl") else 0.0
    assert float(aux["alpha"]) == pytest.approx(want_alpha, rel=1e-6)


def test_make_loss_defaults_for_missing_fields(batch):
    z, f, y, _ = batch
    # Only the name: paper λ, parabolic α, offset 10, per-step α.
    loss, aux = losses.make_loss(cfg(name="fbl"), COUNTS, 100)(
        f32(z), f32(f), jnp.asarray(y), jnp.float32(30.0)
    )
    assert float(aux["alpha"]) == pytest.approx(0.09, rel=1e-6)  # (30/100)²
    close(loss, np_ce(np_fbl_logits(z, f, np_lambda(COUNTS), 0.09), y))
    # focal default γ = 1 and a plain dict config.
    got, _ = losses.make_loss({"name": "focal"}, COUNTS, 100)(
        f32(z), f32(f), jnp.asarray(y), jnp.float32(0.0)
    )
    close(got, np_focal(z, y, 1.0))


def test_make_loss_authors_code_form(batch):
    z, f, y, _ = batch
    config = cfg(
        name="fbl",
        fbl_form="authors_code",
        fbl_scale=60.0,
        curriculum="authors_code",
        curriculum_offset=10.0,
        alpha_per_epoch=True,
    )
    loss_fn = losses.make_loss(config, COUNTS, 200)
    loss, aux = loss_fn(f32(z), f32(f), jnp.asarray(y), jnp.float32(95.7))
    # floor(95.7) = 95 → (95 / 190)² = 0.25.
    assert float(aux["alpha"]) == pytest.approx(0.25, rel=1e-6)
    lam = np_lambda(COUNTS) / np_lambda(COUNTS).max() * 60.0
    close(loss, np_ce(np_fbl_logits(z, f, lam, 0.25), y))


def np_alpha(curriculum, t, total, offset):
    """α(t) from the paper's Table 4 (r = t/T held in [0, 1]) and the authors' code (uncapped)."""
    if curriculum == "authors_code":
        return (t / (total - offset)) ** 2
    r = min(max(t / total, 0.0), 1.0)
    return {
        "parabolic": r**2,
        "linear": r,
        "sine": math.sin(math.pi / 2 * r),
        "cosine": 1 - math.cos(math.pi / 2 * r),
        "linear_decrease": 1 - r,
        "constant": 1.0,
    }[curriculum]


# (fbl_form, A, curriculum, α per epoch): every curriculum in the form the paper or the
# authors' code pairs it with, and each form once with the other's curriculum.
CURRICULUM_CASES = [
    ("paper", 1.0, "parabolic", False),
    ("paper", 1.0, "linear", False),
    ("paper", 1.0, "sine", False),
    ("paper", 1.0, "cosine", False),
    ("paper", 1.0, "linear_decrease", False),
    ("paper", 1.0, "constant", False),
    ("authors_code", 60.0, "authors_code", False),
    ("authors_code", 60.0, "authors_code", True),
    ("authors_code", 30.0, "sine", True),
    ("paper", 1.0, "authors_code", False),
]


@pytest.mark.parametrize(
    "form, scale, curriculum, per_epoch", CURRICULUM_CASES, ids=lambda v: str(v)
)
def test_fbl_under_every_curriculum_matches_numpy(batch, form, scale, curriculum, per_epoch):
    """make_loss (and the shared program formula) at several t of T = 200 (offset 10): α(t),
    the loss and its gradients w.r.t. logits and features against the paper's formula in NumPy.
    The t include a fraction (per-step α vs floor(t)), the last offset epochs (the authors'
    α > 1, uncapped) and t > T (the paper's r held at 1)."""
    z, f, y, _ = batch
    total, offset = 200.0, 10.0
    config = cfg(
        name="fbl",
        fbl_form=form,
        fbl_scale=scale,
        curriculum=curriculum,
        curriculum_offset=offset,
        alpha_per_epoch=per_epoch,
    )
    lam = np_lambda(COUNTS)
    if form == "authors_code":
        lam = lam / lam.max() * scale
    loss_fn = losses.make_loss(config, COUNTS, total)
    coeffs = {
        k: jnp.asarray(v) for k, v in losses.program_coefficients(config, COUNTS, total).items()
    }

    def single(zz, ff, t):
        return loss_fn(zz, ff, jnp.asarray(y), t)

    def program(zz, ff, t):
        return losses.program_loss(zz, ff, jnp.asarray(y), t, coeffs, total)

    ts = (0.0, 37.5, 100.0, 163.3, 195.0, 230.0)
    for fn in (single, program):
        grad = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)
        (loss, aux), (gz, gf) = jax.vmap(grad, in_axes=(None, None, 0))(
            f32(z), f32(f), jnp.asarray(ts, jnp.float32)
        )
        for i, t in enumerate(ts):
            alpha = np_alpha(curriculum, math.floor(t) if per_epoch else t, total, offset)
            where = f"{fn.__name__} at t={t}"
            assert float(aux["alpha"][i]) == pytest.approx(alpha, rel=1e-5, abs=1e-7), where
            close(loss[i], np_ce(np_fbl_logits(z, f, lam, alpha), y), rtol=1e-5)
            want_z, want_f = np_fbl_grads(z, f, y, lam, alpha, None)
            close(gz[i], want_z, rtol=1e-4, atol=1e-6)
            close(gf[i], want_f, rtol=1e-4, atol=1e-6)


def test_drw_switches_in_make_loss(batch):
    z, f, y, _ = batch
    z = np.tanh(z)
    loss_fn = jax.jit(losses.make_loss(cfg(name="ldam_drw", drw_start_epoch=160), COUNTS, 200))
    before, _ = loss_fn(f32(z), f32(f), jnp.asarray(y), jnp.float32(159.5))
    after, _ = loss_fn(f32(z), f32(f), jnp.asarray(y), jnp.float32(160.0))
    adj = np_ldam_adjusted(z, y, COUNTS, 0.5, 30.0)
    close(before, np_ce(adj, y))
    close(after, np_ce(adj, y, np_cb_weights(COUNTS, 0.9999)))
    assert abs(float(after) - float(before)) > 1e-3


def test_jitted_loss_fn_compiles_once_across_epochs(batch):
    z, f, y, _ = batch
    base = losses.make_loss(cfg(name="fbl_drw", drw_start_epoch=10), COUNTS, 20)
    traces = []

    @jax.jit
    def step(zz, ff, yy, epoch):
        traces.append(1)
        return base(zz, ff, yy, epoch)

    _, aux1 = step(f32(z), f32(f), jnp.asarray(y), jnp.float32(2.0))
    _, aux2 = step(f32(z), f32(f), jnp.asarray(y), jnp.float32(15.0))
    assert len(traces) == 1
    assert float(aux1["alpha"]) == pytest.approx(0.01, rel=1e-6)  # (2/20)²
    assert float(aux2["alpha"]) == pytest.approx(0.5625, rel=1e-6)  # (15/20)²


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(name="fbll"), "fbll.*valid choices"),
        (dict(name="fbl", fbl_form="code"), "fbl_form.*code.*paper"),
        (dict(name="fbl", curriculum="quadratic"), "quadratic.*parabolic"),
        (dict(name="fbl", curriculum="authors_code", curriculum_offset=300.0), "offset"),
        (dict(name="focal", focal_gamma=-0.5), "gamma"),
        (dict(name="cb", cb_beta=1.0), "beta"),
        (dict(name="ldam", ldam_max_m=0.0), "max_m"),
        (dict(name="ldam", ldam_s=-1.0), "ldam s"),
        (dict(name="ldam_drw", drw_start_epoch=-1), "drw_start_epoch"),
        (dict(name="la", la_tau="big"), "la_tau"),
    ],
)
def test_make_loss_rejects_bad_config(config, match):
    with pytest.raises(ValueError, match=match):
        losses.make_loss(cfg(**config), COUNTS, 200)


def test_loss_fn_rejects_wrong_class_count(batch):
    z, f, y, _ = batch
    loss_fn = losses.make_loss(cfg(name="ce"), COUNTS + [3], 10)
    with pytest.raises(ValueError, match="class_counts"):
        loss_fn(f32(z), f32(f), jnp.asarray(y), jnp.float32(0.0))
