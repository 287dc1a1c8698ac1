"""Tests for xlsr_jax.sharding: rule coverage, no accidental replication, batch placement."""

import jax
import jax.numpy as jnp
import pytest

from tests.trainer_testlib import run_with_devices
from xlsr_jax import sharding


def _abstract_params(preset: str, **overrides):
    from xlsr_jax.models import Wav2Vec2ForPreTraining, get_preset

    cfg = get_preset(preset, **overrides)
    model = Wav2Vec2ForPreTraining(cfg)
    audio = jnp.zeros((1, 16000))
    rngs = {name: jax.random.PRNGKey(0) for name in ("params", "dropout", "gumbel", "mask")}
    return jax.eval_shape(lambda: model.init(rngs, audio, jnp.zeros_like(audio, bool), deterministic=True))


def test_rule_table_covers_every_axis_constant_once():
    names = [name for name, _ in sharding.logical_axis_rules()]
    assert len(names) == len(set(names))
    assert set(names) == set(sharding.PARAM_AXES) | set(sharding.ACTIVATION_AXES)
    for _, axes in sharding.logical_axis_rules():
        for axis in (axes,) if isinstance(axes, str) else (axes or ()):
            assert axis in sharding.MESH_AXES


@pytest.mark.parametrize("overrides", [{}, {"scan_layers": True}])
def test_every_logical_axis_used_by_the_model_has_a_rule(overrides):
    used = sharding.logical_axes_used(_abstract_params("tiny", **overrides))
    assert used, "the model carries no logical axis annotations"
    known = {name for name, _ in sharding.logical_axis_rules()}
    assert used <= known, f"axes without a rule: {used - known}"
    assert {sharding.EMBED, sharding.MLP, sharding.HEADS} <= used


def test_unknown_logical_axis_is_an_error():
    mesh = sharding.create_mesh(devices=jax.devices()[:1])
    with pytest.raises(KeyError, match="no rule"):
        sharding.logical_to_sharding(jax.sharding.PartitionSpec("embd"), (4,), mesh)


def test_no_large_parameter_replicated_and_batch_placement_on_8_devices():
    out = run_with_devices(
        """
        import jax, jax.numpy as jnp, numpy as np, optax, flax.linen as nn
        from xlsr_jax import sharding
        from tests.test_sharding import _abstract_params
        mesh = sharding.create_mesh(data=2, fsdp=4)
        for preset, kw in (("base", {}), ("large", {"scan_layers": True}), ("xls_r_1b", {"scan_layers": True})):
            boxed = _abstract_params(preset, **kw)["params"]
            # Optimizer moments inherit the parameters' logical axes through tx.init.
            state = jax.eval_shape(lambda p: (p, optax.adamw(1e-3).init(p)), boxed)
            shardings = sharding.state_shardings(state, mesh)
            params = nn.unbox(boxed)
            bad = sharding.replicated_parameters(params, shardings[0], min_size=2**16,
                                                 logical_specs=nn.get_partition_spec(boxed))
            assert not bad, (preset, bad)
            mu = shardings[1][0].mu
            assert jax.tree.leaves(mu) == jax.tree.leaves(shardings[0]), preset
            total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
            split = sum(int(np.prod(x.shape)) for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings[0]))
                        if not s.is_fully_replicated)
            print(preset, "params", total, "sharded_fraction", round(split / total, 4))
        batch = {"audio": np.arange(8 * 6, dtype=np.float32).reshape(8, 6), "padding_mask": np.zeros((8, 6), bool)}
        placed = sharding.shard_batch(batch, mesh)
        audio = placed["audio"]
        assert audio.shape == (8, 6) and len(audio.addressable_shards) == 8
        assert {tuple(s.data.shape) for s in audio.addressable_shards} == {(1, 6)}
        np.testing.assert_array_equal(np.asarray(audio), batch["audio"])
        try:
            sharding.shard_batch({"audio": np.zeros((6, 2), np.float32)}, mesh)
        except ValueError as e:
            print("indivisible:", e)
        P = jax.sharding.PartitionSpec
        # A dim the mesh axis does not divide stays whole instead of failing inside jit.
        assert sharding.logical_to_sharding(P("embed", "mlp"), (6, 4), mesh).spec == P(None, "tensor")
        assert sharding.logical_to_sharding(P("embed", "mlp"), (8, 4), mesh).spec == P("fsdp", "tensor")
        print("ok")
    """,
        devices=8,
        timeout=240,
    )
    assert "ok" in out and "indivisible: batch['audio'] has local batch 6" in out
    for preset in ("base", "large", "xls_r_1b"):
        line = next(row for row in out.splitlines() if row.startswith(preset + " params"))
        assert float(line.split()[-1]) > 0.99, line  # essentially every weight is split


def test_rule_overrides_replace_in_place_and_append_new_names():
    base = dict(sharding.logical_axis_rules())
    rules = sharding.logical_axis_rules_with([(sharding.ACT_TIME, ["fsdp"]), ("extra_axis", None)])
    names = [name for name, _ in rules]
    assert names[: len(base)] == list(base) and names[-1] == "extra_axis"
    assert dict(rules)[sharding.ACT_TIME] == ("fsdp",)
    assert sharding.logical_axis_rules_with(None) == sharding.logical_axis_rules()
