"""The loss-kind registry: every kind declared once and complete, unknown names refused, a new
kind reaching the config, labels and make_loss from its declaration alone, and the shared
program formula equal to each kind's single-run loss."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fbl_jax import defaults, losses
from fbl_jax.defaults import ConfigError
from fbl_jax.losses import registry
from fbl_jax.losses.registry import Field, LossKind
from fbl_jax.report import labels
from fbl_jax.train import programs

COUNTS = np.array([50, 20, 8, 3], np.float64)
T = 20

# name -> (report label at the defaults, needs the cosine head); written out by hand.
KINDS = {
    "ce": ("CE", False),
    "focal": ("Focal (γ=1.0)", False),
    "cb": ("CB (β=0.9999)", False),
    "ldam": ("LDAM", True),
    "ldam_drw": ("LDAM-DRW", True),
    "la": ("LA (τ=1.0)", False),
    "balanced_softmax": ("Balanced softmax", False),
    "fbl": ("FBL (paper form)", False),
    "fbl_drw": ("FBL-DRW (paper form)", False),
}
# The CIFAR-LT protocol's loss defaults (the values and types config.json has always held).
DEFAULTS = {
    "fbl_form": "paper",
    "fbl_scale": 1.0,
    "curriculum": "parabolic",
    "curriculum_offset": 10.0,
    "alpha_per_epoch": False,
    "focal_gamma": 1.0,
    "cb_beta": 0.9999,
    "ldam_max_m": 0.5,
    "ldam_s": 30.0,
    "drw_start_epoch": 160,
    "la_tau": 1.0,
}


def np_ce(z, y, w=None):
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    nll = -logp[np.arange(len(y)), y]
    wy = np.ones(len(y)) if w is None else np.asarray(w, np.float64)[y]
    return np.sum(wy * nll) / np.sum(wy)


def batch(seed=0, n=16, c=4, d=8):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)), rng.normal(size=(n, d)) * 2.0, rng.integers(0, c, n)


# ----------------------------------------------------------------------------- every kind


def test_the_registered_kinds_and_their_declarations():
    assert losses.LOSS_NAMES == tuple(KINDS)
    assert defaults.choice_fields()["loss.name"] == tuple(KINDS)
    for name, (label, cosine) in KINDS.items():
        kind = registry.get_kind(name)
        assert labels.method_name({"loss": {"name": name}}) == label
        assert losses.loss_needs_cosine_head(name) is cosine
        for field in kind.fields:
            assert field.name in DEFAULTS and field.doc
        # a single formula: the defaults build a finite loss
        z, f, y = (jnp.asarray(x) for x in batch())
        loss, aux = losses.make_loss({"name": name}, COUNTS, T)(
            jnp.tanh(z).astype(jnp.float32), f.astype(jnp.float32), y, jnp.float32(5.0)
        )
        assert np.isfinite(float(loss)) and set(aux) == {"alpha"}
        # program coefficients, or a declared reason why not
        assert (kind.coefficients is None) == bool(kind.no_program)
        if kind.coefficients is not None:
            coeffs = losses.program_coefficients({"name": name}, COUNTS, T)
            assert set(coeffs) == set(losses.program_coefficients({"name": "ce"}, COUNTS, T))


def test_loss_fields_have_one_default_each():
    assert losses.LOSS_DEFAULTS == DEFAULTS
    loss = defaults.get_default_config().loss.to_dict()
    assert loss == {"name": "fbl", **DEFAULTS}
    assert all(type(loss[k]) is type(v) for k, v in DEFAULTS.items())
    by_name: dict[str, set[int]] = {}
    for kind in registry.kinds():
        for field in kind.fields:
            by_name.setdefault(field.name, set()).add(id(field))
    assert all(len(ids) == 1 for ids in by_name.values())  # shared fields: one declaration
    assert defaults.choice_fields()["loss.fbl_form"] == ("paper", "authors_code")
    assert "authors_code" in defaults.choice_fields()["loss.curriculum"]


def test_run_axis_keys_are_the_sharing_kinds_fields():
    assert set(programs.RUN_AXIS_KEYS) == {
        "seed",
        "run_name",
        "loss.name",
        *(f"loss.{k}" for k in DEFAULTS),
    }


# ----------------------------------------------------------------------------- unknown names


def test_an_unknown_name_lists_the_choices_everywhere():
    for call in (
        lambda: losses.make_loss({"name": "fbll"}, COUNTS, T),
        lambda: losses.program_coefficients({"name": "fbll"}, COUNTS, T),
        lambda: losses.loss_needs_cosine_head("fbll"),
    ):
        with pytest.raises(
            ConfigError, match="'fbll'.*valid choices: ce, focal.*did you mean 'fbl'"
        ):
            call()
    with pytest.raises(ValueError, match="needs a 'name'"):
        losses.make_loss({}, COUNTS, T)
    assert labels.method_name({"loss": {"name": "fbll"}}) == "fbll"


def test_each_name_is_computed_by_its_own_kind_only(monkeypatch):
    built = []

    def spy(name):
        def build(settings, counts, num_epochs):
            built.append(name)
            return lambda z, f, y, e: (jnp.zeros(()), {})

        return build

    for kind in registry.kinds():
        monkeypatch.setitem(
            registry._KINDS, kind.name, dataclasses.replace(kind, build=spy(kind.name))
        )
    for name in KINDS:
        losses.make_loss({"name": name}, COUNTS, T)
        assert built == [name]
        built.clear()
    for unknown in ("", "FBL", "fbl ", "balanced", "softmax", "drw", None, 3):
        with pytest.raises(ValueError):
            losses.make_loss({"name": unknown}, COUNTS, T)
    assert built == []


# ----------------------------------------------------------------------------- a new kind

TOY_WEIGHT = Field("toy_weight", 2.0, "Brier weight", show=lambda v: f"w={v:g}")
TOY_SCALE = Field("toy_scale", 3.0, "logit scale", check=losses.check_tau)


def _build_brier(settings, counts, num_epochs):
    w = settings["toy_weight"]

    def formula(logits, features, labels, epoch):
        p = jax.nn.softmax(logits, axis=-1)
        onehot = jax.nn.one_hot(labels, logits.shape[-1])
        return w * jnp.mean(jnp.sum((p - onehot) ** 2, axis=-1)), {}

    return formula


def _build_scaled(settings, counts, num_epochs):
    s = settings["toy_scale"]
    return lambda z, f, y, e: (losses.cross_entropy_loss(s * z, y), {})


@pytest.fixture
def toy_kinds():
    """Two kinds declared in the test alone: one refuses programs, one shares them."""
    kinds = [
        LossKind(
            name="toy_brier",
            label="Toy Brier",
            fields=(TOY_WEIGHT,),
            build=_build_brier,
            no_program="the Brier score is not a cross-entropy",
        ),
        LossKind(
            name="toy_scaled",
            label="Toy scaled CE",
            fields=(TOY_SCALE, TOY_WEIGHT),
            build=_build_scaled,
            coefficients=lambda settings, counts: {"scale": settings["toy_scale"]},
        ),
    ]
    for kind in kinds:
        registry.register(kind)
    yield
    for kind in kinds:
        registry.unregister(kind.name)


def test_a_new_kind_reaches_config_labels_and_losses(toy_kinds):
    assert losses.LOSS_NAMES == (*KINDS, "toy_brier", "toy_scaled")
    assert defaults.choice_fields()["loss.name"] == losses.LOSS_NAMES
    config = defaults.get_default_config()
    assert config.loss.toy_weight == 2.0 and config.loss.toy_scale == 3.0
    config.loss.name = "toy_brier"
    defaults.validate_config(config)
    assert labels.method_name({"loss": {"name": "toy_brier"}}) == "Toy Brier"
    assert labels.method_name({"loss": {"name": "toy_brier", "toy_weight": 3}}) == "Toy Brier (w=3)"

    z, f, y = batch()
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    want = 3.0 * np.mean(np.sum((p - np.eye(4)[y]) ** 2, axis=1))
    loss, aux = losses.make_loss({"name": "toy_brier", "toy_weight": 3.0}, COUNTS, T)(
        jnp.asarray(z, jnp.float32), jnp.asarray(f, jnp.float32), y, 0.0
    )
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert float(aux["alpha"]) == 0.0
    with pytest.raises(ConfigError, match="'toy_brier' cannot share.*not a cross-entropy"):
        losses.program_coefficients({"name": "toy_brier"}, COUNTS, T)

    # the sharing toy: its one coefficient turns the program formula into CE(s · z)
    coeffs = losses.program_coefficients({"name": "toy_scaled"}, COUNTS, T)
    got, _ = losses.program_loss(
        jnp.asarray(z, jnp.float32), jnp.asarray(f, jnp.float32), y, 1.0, coeffs, T
    )
    np.testing.assert_allclose(got, np_ce(3.0 * z, y), rtol=1e-5)
    with pytest.raises(ValueError, match="logit-adjustment tau must be finite"):
        losses.make_loss({"name": "toy_scaled", "toy_scale": float("inf")}, COUNTS, T)


def test_an_unregistered_kind_is_gone():
    kind = LossKind("toy_gone", "Gone", (TOY_WEIGHT,), _build_brier, no_program="toy")
    registry.register(kind)
    try:
        assert losses.LOSS_NAMES[-1] == "toy_gone"
    finally:
        registry.unregister("toy_gone")
    assert losses.LOSS_NAMES == tuple(KINDS)
    assert "toy_weight" not in defaults.get_default_config().loss
    assert labels.method_name({"loss": {"name": "toy_gone"}}) == "toy_gone"
    with pytest.raises(ConfigError, match="valid choices"):
        losses.make_loss({"name": "toy_gone"}, COUNTS, T)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"name": "ce"}, "registered twice"),
        ({"name": "Toy"}, "lower-case"),
        ({"label": ""}, "label"),
        ({"no_program": "", "coefficients": None}, "either `coefficients`"),
        ({"coefficients": lambda s, c: {}}, "either `coefficients`"),
        ({"fields": (Field("cb_beta", 0.99, "β"),)}, "cb_beta.*declared differently.*0.9999"),
        ({"fields": (Field("fbl_form", "other", "form"),)}, "fbl_form.*declared differently"),
        ({"fields": (Field("name", 1.0, "x"),)}, "'name'"),
        ({"fields": (Field("t", "c", "x", choices=("a", "b")),)}, "not one of a, b"),
        ({"label_always": ("toy_weight",)}, "label_always"),
    ],
)
def test_a_bad_declaration_is_refused(change, match):
    kind = LossKind(
        name="toy",
        label="Toy",
        fields=(),
        build=_build_brier,
        no_program="toy",
    )
    with pytest.raises(ValueError, match=match):
        registry.register(dataclasses.replace(kind, **change))
    assert "toy" not in losses.LOSS_NAMES


def test_fields_are_checked_whatever_the_kind():
    config = ml_collections.ConfigDict({"name": "fbl", **DEFAULTS})
    config.cb_beta = 1.5  # fbl does not read β, but a config must not hold an impossible one
    with pytest.raises(ValueError, match=r"beta.*\[0, 1\)"):
        losses.check_fields(config)
    losses.make_loss(config, COUNTS, T)  # a kind reads (and checks) only its own fields
    for key, bad, match in (
        ("focal_gamma", -1.0, "focal gamma"),
        ("ldam_s", 0.0, "ldam s must"),
        ("ldam_max_m", -0.1, "ldam max_m"),
        ("fbl_scale", -2.0, "fbl scale"),
        ("drw_start_epoch", -1, "drw_start_epoch"),
        ("fbl_form", "code", "fbl_form='code' is not one of paper"),
    ):
        with pytest.raises(ValueError, match=match):
            losses.check_fields({key: bad})
    with pytest.raises(ValueError, match="'la_tau' must be a number"):
        losses.check_fields({"la_tau": "big"})


# ----------------------------------------------------------------------------- the program formula


def _loss_config(**kw):
    return ml_collections.ConfigDict({**losses.LOSS_DEFAULTS, "name": "ce", **kw})


LOSS_CASES = [
    {"name": "ce"},
    {"name": "fbl", "fbl_form": "paper", "curriculum": "parabolic"},
    {"name": "fbl", "fbl_form": "authors_code", "fbl_scale": 60.0, "curriculum": "authors_code",
     "curriculum_offset": 4.0, "alpha_per_epoch": True},
    {"name": "fbl", "curriculum": "sine"},
    {"name": "fbl", "curriculum": "cosine"},
    {"name": "fbl", "curriculum": "linear_decrease"},
    {"name": "fbl", "curriculum": "linear", "fbl_scale": 2.0},
    {"name": "fbl_drw", "fbl_form": "authors_code", "fbl_scale": 30.0, "drw_start_epoch": 10.0},
    {"name": "cb", "cb_beta": 0.99},
    {"name": "focal", "focal_gamma": 2.0},
    {"name": "la", "la_tau": 1.5},
    {"name": "balanced_softmax"},
    {"name": "ldam", "ldam_max_m": 0.4, "ldam_s": 20.0},
    {"name": "ldam_drw", "drw_start_epoch": 10.0},
    {"name": "ce", "curriculum": "authors_code", "curriculum_offset": 20.0},  # unused, not NaN
]  # fmt: skip


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("epoch", [0.0, 7.3, 12.0])
def test_program_loss_is_each_single_run_loss(case, epoch):
    """Value and gradient (w.r.t. logits and features) equal make_loss's (tests/test_losses.py
    checks make_loss against NumPy); a run's extra "seed" is ignored."""
    cfg = _loss_config(**case)
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
    if case["name"].startswith("ldam"):
        logits = jnp.tanh(logits)  # cosine logits
    features = jnp.asarray(rng.normal(size=(16, 8)) * 2.0, jnp.float32)
    labels_ = jnp.asarray(rng.integers(0, 4, 16), jnp.int32)
    h = {k: jnp.asarray(v) for k, v in losses.program_coefficients(cfg, COUNTS, T).items()}
    h["seed"] = jnp.int32(7)
    single = losses.make_loss(cfg, COUNTS, T)

    def f_single(z, f):
        return single(z, f, labels_, jnp.float32(epoch))[0]

    def f_program(z, f):
        return losses.program_loss(z, f, labels_, jnp.float32(epoch), h, T)[0]

    v1, g1 = jax.value_and_grad(f_single, argnums=(0, 1))(logits, features)
    v2, g2 = jax.value_and_grad(f_program, argnums=(0, 1))(logits, features)
    np.testing.assert_allclose(v2, v1, rtol=2e-6, atol=1e-7)
    for a, b in zip(g2, g1):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
    a1 = single(logits, features, labels_, jnp.float32(epoch))[1]["alpha"]
    a2 = losses.program_loss(logits, features, labels_, jnp.float32(epoch), h, T)[1]["alpha"]
    np.testing.assert_allclose(a2, a1, rtol=1e-6)


def test_program_loss_against_numpy_formula():
    """FBL (authors' form) with an LA offset and DRW weights at once, written out in NumPy."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 4))
    f = rng.normal(size=(6, 5))
    y = rng.integers(0, 4, 6)
    lam = (np.log(COUNTS.max()) - np.log(COUNTS)) / np.log(COUNTS.max() / COUNTS.min()) * 60.0
    offset = 0.7 * np.log(COUNTS / COUNTS.sum())
    w = (1 - 0.999) / (1 - 0.999**COUNTS)
    w = w / w.sum() * 4
    epoch = 11.0
    alpha = (epoch / T) ** 2
    zb = z - alpha * lam[None] / np.linalg.norm(f, axis=1, keepdims=True) + offset[None]
    want = np_ce(zb, y, w)
    cfg = _loss_config(
        name="fbl_drw", fbl_form="authors_code", fbl_scale=60.0, cb_beta=0.999, drw_start_epoch=10.0
    )
    h = {k: jnp.asarray(v) for k, v in losses.program_coefficients(cfg, COUNTS, T).items()}
    h["logit_offset"] = jnp.asarray(offset, jnp.float32)
    got = losses.program_loss(
        jnp.asarray(z, jnp.float32),
        jnp.asarray(f, jnp.float32),
        jnp.asarray(y),
        jnp.float32(epoch),
        h,
        T,
    )[0]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_stack_coefficients_puts_runs_on_a_leading_axis():
    runs = [
        {**losses.program_coefficients({"name": name}, COUNTS, T), "seed": np.int32(i)}
        for i, name in enumerate(("ce", "fbl", "la"))
    ]
    stacked = losses.stack_coefficients(runs)
    assert stacked["seed"].tolist() == [0, 1, 2]
    assert stacked["lam"].shape == (3, 4) and stacked["lam"].dtype == np.float32
    np.testing.assert_allclose(stacked["lam"][1], np.log(50.0) - np.log(COUNTS), rtol=1e-6)
    np.testing.assert_allclose(stacked["logit_offset"][2], np.log(COUNTS / 81.0), rtol=1e-6)
    assert stacked["uses_alpha"].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="keys"):
        losses.stack_coefficients([runs[0], {k: v for k, v in runs[1].items() if k != "seed"}])
