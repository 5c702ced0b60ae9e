"""hair_jax.train.objective: the selection losses, each off by default."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import demo
from hair_jax.nn import hyper, models
from hair_jax.train import config as train_config
from hair_jax.train import objective as obj_lib
from hair_jax.train.objective import Objective

OPTIONS = {"giv_classes": 5, "router_norm": True, "router_temperature": 0.5}


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.random((4, 64, 64, 3), np.float32)
    degraded = np.clip(clean + 0.2 * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)
    # denoise_15, derain, dehaze, denoise_50: types noise, rain, haze, noise
    return {"degraded": degraded, "clean": clean, "task": np.array([0, 3, 4, 2], np.int32)}


@pytest.fixture(scope="module")
def model():
    return models.build_model("tiny", rngs=nnx.Rngs(0), **OPTIONS)


def _grads(model, obj, step=0):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def run(params, batch, step):
        def loss(params):
            return obj_lib.loss_fn(nnx.merge(graphdef, params, rest), batch, step, obj)

        return jax.value_and_grad(loss, has_aux=True)(params)

    return run(params, _batch(), step)


def test_defaults_are_the_papers_l1_loss(model):
    assert not Objective().active
    config = demo.get_config()
    assert train_config.objective(config) == Objective()  # hair_jax.train.defaults's
    (loss, (restored, metrics)), _ = _grads(model, Objective())
    batch = _batch()
    l1 = jnp.mean(jnp.abs(model(jnp.asarray(batch["degraded"])) - batch["clean"]))
    assert float(loss) == pytest.approx(float(l1), abs=1e-6)
    # Only the selection measures are added; no loss term.
    assert set(metrics) == {"selector_entropy", "selector_type_mi", "router_logit_spread"}


@pytest.mark.parametrize(
    "weights",
    [
        {"giv_loss_weight": 0.3},
        {"giv_loss": "supcon", "giv_loss_weight": 0.3},
        {"routing_loss_weight": 0.3},
        {"routing_target_weight": 0.3},
    ],
)
def test_each_term_adds_its_weight_times_its_value_and_nothing_at_weight_zero(model, weights):
    (loss, (_, metrics)), _ = _grads(model, Objective(**weights))
    name = {
        "giv_loss_weight": "giv_loss",
        "routing_loss_weight": "routing_loss",
        "routing_target_weight": "routing_target_loss",
    }
    (key,) = [name[k] for k in weights if k in name]
    assert float(loss) == pytest.approx(float(metrics["l1"]) + 0.3 * float(metrics[key]), rel=1e-5)
    assert float(metrics[key]) != 0.0
    zero = {k: (0.0 if k in name else v) for k, v in weights.items()}
    (loss0, (_, metrics0)), _ = _grads(model, Objective(**zero))
    assert key not in metrics0 and "l1" not in metrics0
    assert float(loss0) == pytest.approx(float(metrics["l1"]), abs=1e-6)


def test_giv_cross_entropy_and_routing_target_values():
    logits = jnp.array([[2.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    types = jnp.array([0, 1])
    labels = jax.nn.one_hot(types, 5) * 0.9 + 0.1 / 5
    expected = -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1))
    assert float(obj_lib.giv_cross_entropy(logits, types, 0.1)) == pytest.approx(float(expected))
    # Selectors on their targets (type mod boxes) cost ~0; uniform ones log K.
    types = jnp.array([0, 1, 2, 4])
    on_target = {"a": jax.nn.one_hot(types % 3, 3)[None], "one": jnp.ones((1, 4, 1))}
    assert float(obj_lib.routing_target_loss(on_target, types)) == pytest.approx(0.0, abs=1e-6)
    uniform = {"a": jnp.full((2, 4, 3), 1 / 3)}
    assert float(obj_lib.routing_target_loss(uniform, types)) == pytest.approx(np.log(3), rel=1e-5)


def test_supervised_contrastive_is_low_for_separated_types_and_ignores_lone_images():
    types = jnp.array([0, 0, 1, 1, 2])  # type 2 has no partner
    separated = jnp.array([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    mixed = jnp.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    low = float(obj_lib.supervised_contrastive(separated, types, 0.1))
    high = float(obj_lib.supervised_contrastive(mixed, types, 0.1))
    assert low < 1e-3 < 5 < high
    # By hand for image 0 of `mixed`: its one positive, image 1, has similarity 0;
    # of the others (1, 2, 3, 4) image 2 has 1.
    sims = jnp.array([0.0, 1.0, 0.0, 0.0]) / 0.1
    per_image = -(jax.nn.log_softmax(sims)[0])
    assert high == pytest.approx(float(per_image), rel=1e-5)  # every paired image alike
    alone = float(obj_lib.supervised_contrastive(separated[:1], types[:1], 0.1))
    assert alone == 0.0


def test_warmup_keeps_the_restoration_gradient_from_the_dac(model):
    obj = Objective(giv_warmup_steps=10)
    dac_grad = lambda g: max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g["dac"]))
    (_, _), during = _grads(model, obj, step=9)
    (_, _), after = _grads(model, obj, step=10)
    assert dac_grad(during) == 0.0 and dac_grad(after) > 0.0
    (_, _), with_loss = _grads(model, Objective(giv_warmup_steps=10, giv_loss_weight=0.1), 9)
    assert dac_grad(with_loss) > 0.0  # the GIV loss alone trains the DAC meanwhile
    # The encoder and the blocks train throughout.
    assert (
        float(
            jnp.abs(during["latent"]["bank"]["weights"]["ffn"]["project_in"]["kernel"][...]).max()
        )
        > 0
    )


def test_temperature_anneals_geometrically_into_the_models_variables(model):
    obj = Objective(temperature_start=2.0, temperature_anneal_steps=100)
    assert float(obj.temperature(jnp.int32(0), 0.5)) == pytest.approx(2.0)
    assert float(obj.temperature(jnp.int32(50), 0.5)) == pytest.approx(1.0, rel=1e-5)
    assert float(obj.temperature(jnp.int32(500), 0.5)) == pytest.approx(0.5)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    hot = nnx.merge(graphdef, params, obj_lib.set_temperature(rest, 3.0))
    temps = [h.temperature[...] for _, h in nnx.iter_graph(hot) if isinstance(h, hyper.HSN)]
    assert len(temps) == 7 and all(float(t) == 3.0 for t in temps)


def _config(**hair):
    config = demo.get_config()
    config.hair.update(hair)
    return config


@pytest.mark.parametrize(
    "overrides, hair, message",
    [
        ({}, {"giv_loss_weight": 0.1}, "giv_loss='ce' needs the GIV head: set"),
        ({}, {"temperature_anneal_steps": 10}, "needs a router temperature to anneal to"),
        ({}, {"giv_loss": "mse"}, "giv_loss must be one of ('ce', 'supcon'), got 'mse'"),
        ({}, {"routing_loss_weight": -1.0}, "config.hair.routing_loss_weight must be >= 0"),
        ({"variant": "restormer"}, {"routing_loss_weight": 0.1}, "but restormer has none"),
    ],
)
def test_config_mistakes_are_one_line_config_errors(overrides, hair, message):
    config = _config(**hair)
    if "variant" in overrides:
        config.model.variant = overrides["variant"]
    with pytest.raises(train_config.ConfigError) as e:
        train_config.check_config(config)
    assert message in str(e.value) and "\n" not in str(e.value)
    config = demo.get_config()
    config.hair.nonsense = 1
    with pytest.raises(train_config.ConfigError, match="config.hair has no field 'nonsense'"):
        train_config.check_config(config)


def test_an_old_run_without_config_hair_still_resumes():
    saved = json.loads(demo.get_config().to_json_best_effort())  # as config.json holds it
    del saved["hair"]
    assert train_config.config_differences(saved, demo.get_config()) == []
    changed = _config(giv_loss_weight=0.5)
    assert [d[0] for d in train_config.config_differences(saved, changed)] == [
        "hair.giv_loss_weight"
    ]


def test_train_step_with_every_option_runs_and_anneals(model):
    config = demo.get_config()
    for k, v in OPTIONS.items():
        config.model.overrides[k] = v
    config.hair.update(
        giv_loss_weight=0.1,
        routing_loss_weight=0.05,
        routing_target_weight=0.05,
        temperature_start=2.0,
        temperature_anneal_steps=4,
    )
    obj = train_config.objective(config)
    from hair_jax.train.state import make_init_fn
    from hair_jax.train.step import make_train_step

    tx = optax.adam(1e-3)
    graphdef, init_fn = make_init_fn(train_config.model_config(config), tx, False)
    step = jax.jit(make_train_step(graphdef, tx, lambda s: 1e-3, 0.0, obj, 0.5))
    state = init_fn(jax.random.PRNGKey(0))
    for _ in range(2):
        state, metrics = step(state, _batch())
    assert float(metrics["router_temperature"]) == pytest.approx(2.0 * (0.5 / 2.0) ** 0.25)
    assert {"giv_loss", "giv_accuracy", "routing_loss", "routing_target_loss", "l1"} <= set(metrics)
    temps = jax.tree.leaves(state.rest, is_leaf=lambda v: isinstance(v, hyper.RouterTemperature))
    temps = [t for t in temps if isinstance(t, hyper.RouterTemperature)]
    assert temps and all(
        float(t[...]) == pytest.approx(float(metrics["router_temperature"])) for t in temps
    )
