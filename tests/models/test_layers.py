"""RMSNorm, MLP, FeedForward and CrossNetV2 against hand-written formulas; config validation errors."""

import dataclasses

import pytest
import torch

from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.errors import ConfigError
from duet_sdk.models import MLP, AttentionConfig, CrossNetV2, FeedForward, HashConfig, RMSNorm, TaskSpec, UpstreamNet
from duet_sdk.training.presets import upstream_config

SCHEMA = SyntheticConfig().schema()


# ---------------------------------------------------------------------------------------------- RMSNorm


def test_rmsnorm_equals_x_over_root_mean_square_plus_eps_times_weight():
    torch.manual_seed(0)
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8))
    x = torch.randn(3, 5, 8) * 3.0
    xd = x.double()
    expected = xd / torch.sqrt((xd**2).mean(dim=-1, keepdim=True) + 1e-6) * norm.weight.double()
    # fp32 module vs fp64 reference on O(1) outputs: a few fp32 ulps, so 1e-5 absolute is ample.
    torch.testing.assert_close(norm(x).double(), expected, atol=1e-5, rtol=0)


def test_rmsnorm_eps_keeps_an_all_zero_input_finite_and_zero():
    out = RMSNorm(4)(torch.zeros(2, 4))
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.zeros(2, 4))


def test_rmsnorm_uses_its_eps_argument():
    # With a large eps the result must shrink exactly as the formula says (not use a hard-coded eps).
    norm = RMSNorm(4, eps=3.0)
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    # mean(x^2) = 1, so the scale is 1 / sqrt(1 + 3) = 0.5; exact in fp32 up to rsqrt rounding (1e-6).
    torch.testing.assert_close(norm(x), 0.5 * x, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- MLP / FFN


@pytest.mark.parametrize("dims", [(4, 2), (4, 16, 2), (5, 7, 9, 3)])
def test_mlp_maps_last_dim_from_first_to_last_entry_of_dims(dims):
    mlp = MLP(dims)
    assert mlp(torch.zeros(3, dims[0])).shape == (3, dims[-1])
    assert mlp(torch.zeros(2, 6, dims[0])).shape == (2, 6, dims[-1])


def test_mlp_is_linear_silu_linear_with_no_activation_after_the_last_layer():
    torch.manual_seed(0)
    mlp = MLP((4, 6, 3))
    lin1, lin2 = [m for m in mlp.net if isinstance(m, torch.nn.Linear)]
    x = torch.randn(5, 4)
    expected = torch.nn.functional.silu(x @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    # Same fp32 ops in the same order: only matmul blocking can differ, 1e-6 absolute on O(1) values.
    torch.testing.assert_close(mlp(x), expected, atol=1e-6, rtol=0)
    assert (mlp(x) < 0).any(), "the last layer must not be followed by an activation"


def test_feedforward_keeps_shape_and_uses_mult_times_d_hidden_width():
    ffn = FeedForward(8, mult=3)
    assert ffn(torch.randn(2, 5, 8)).shape == (2, 5, 8)
    widths = [m.out_features for m in ffn.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [24, 8]


# ---------------------------------------------------------------------------------------------- CrossNetV2


@pytest.mark.parametrize("num_layers", [0, 1, 3])
def test_crossnetv2_equals_explicit_loop_x0_times_wx_plus_b_plus_x(num_layers):
    torch.manual_seed(1)
    net = CrossNetV2(6, num_layers)
    x0 = torch.randn(4, 6)
    x = x0.double()
    for layer in net.layers:
        w, b = layer.weight.double(), layer.bias.double()
        x = x0.double() * (x @ w.T + b) + x
    # fp32 module vs fp64 loop, values O(1-10) after 3 layers: 1e-5 absolute + 1e-5 relative is fp32 noise.
    torch.testing.assert_close(net(x0).double(), x, atol=1e-5, rtol=1e-5)


def test_crossnetv2_with_zero_layers_is_identity():
    x = torch.randn(3, 5)
    assert torch.equal(CrossNetV2(5, 0)(x), x)


# ---------------------------------------------------------------------------------------------- configs


def _click(**changes):
    return dataclasses.replace(upstream_config("click", SCHEMA, "demo"), **changes)


def _assert_config_error(field, build):
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.field == field
    assert field in str(info.value)


def test_demo_presets_are_valid_configs():
    for kind in ("click", "conv"):
        cfg = upstream_config(kind, SCHEMA, "demo")
        assert cfg.kind == kind
        assert cfg.primary_task in cfg.task_names


def test_d_model_not_multiple_of_num_heads_names_d_model():
    _assert_config_error("UpstreamConfig.d_model", lambda: _click(d_model=30, attention=AttentionConfig(num_heads=4)))


def test_unknown_block_kind_names_blocks():
    _assert_config_error("UpstreamConfig.blocks", lambda: _click(blocks=("self", "mamba")))


def test_empty_blocks_names_blocks():
    _assert_config_error("UpstreamConfig.blocks", lambda: _click(blocks=()))


def test_growing_pyramid_names_pyramid():
    _assert_config_error("UpstreamConfig.pyramid", lambda: _click(pyramid=(2, 4)))


def test_pyramid_zero_after_positive_counts_as_growing():
    # 0 means "keep all", which is more than 4.
    _assert_config_error("UpstreamConfig.pyramid", lambda: _click(pyramid=(4, 0)))


def test_pyramid_wrong_length_or_negative_names_pyramid():
    _assert_config_error("UpstreamConfig.pyramid", lambda: _click(pyramid=(4,)))
    _assert_config_error("UpstreamConfig.pyramid", lambda: _click(pyramid=(4, -1)))


def test_non_growing_pyramids_are_accepted():
    assert _click(pyramid=(0, 3)).pyramid == (0, 3)
    assert _click(pyramid=(4, 4)).pyramid == (4, 4)


def test_primary_task_not_among_tasks_names_primary_task():
    _assert_config_error("UpstreamConfig.primary_task", lambda: _click(primary_task="cvr"))


def test_duplicate_task_names_name_tasks():
    _assert_config_error("UpstreamConfig.tasks", lambda: _click(tasks=(TaskSpec("ctr"), TaskSpec("ctr"))))


def test_unknown_model_kind_names_kind():
    _assert_config_error("UpstreamConfig.kind", lambda: _click(kind="view"))


def test_unknown_stream_names_streams():
    _assert_config_error("UpstreamConfig.streams", lambda: _click(streams=("purchase",)))
    _assert_config_error("UpstreamConfig.streams", lambda: _click(streams=()))


@pytest.mark.parametrize(
    "field", ["d_model", "ffn_mult", "num_seed_tokens", "time_frequencies", "tower_out_dim", "embedding_dim"]
)
@pytest.mark.parametrize("value", [0, -1, True, 2.0])
def test_positive_int_fields_reject_non_positive_or_non_int(field, value):
    _assert_config_error(f"UpstreamConfig.{field}", lambda: _click(**{field: value}))


def test_bad_dropout_and_dcn_layers_name_their_field():
    _assert_config_error("UpstreamConfig.dropout", lambda: _click(dropout=1.0))
    _assert_config_error("UpstreamConfig.dropout", lambda: _click(dropout=-0.1))
    _assert_config_error("UpstreamConfig.dcn_layers", lambda: _click(dcn_layers=-1))


def test_attention_config_rejects_unknown_kind_and_zero_heads():
    _assert_config_error("AttentionConfig.kind", lambda: AttentionConfig(kind="linear"))
    _assert_config_error("AttentionConfig.num_heads", lambda: AttentionConfig(num_heads=0))
    _assert_config_error("AttentionConfig.latent_dim", lambda: AttentionConfig(latent_dim=0))


def test_hash_config_rejects_non_positive_sizes():
    _assert_config_error("HashConfig.num_hashes", lambda: HashConfig(num_hashes=0))
    _assert_config_error("HashConfig.table_size", lambda: HashConfig(table_size=0))
    _assert_config_error("HashConfig.dim", lambda: HashConfig(dim=-2))


def test_task_spec_rejects_negative_weight():
    _assert_config_error("TaskSpec(ctr).weight", lambda: TaskSpec("ctr", -1.0))


def test_task_spec_rejects_nan_weight():
    # A NaN loss weight silently turns the whole training loss into NaN; "a float >= 0" must exclude it.
    _assert_config_error("TaskSpec(ctr).weight", lambda: TaskSpec("ctr", float("nan")))


def test_pyramid_entries_must_be_ints():
    # The error text promises "ints >= 0"; a float keep count is accepted today and only fails deep inside
    # keep_recent (torch.arange(2.5) + index_select on a float index) at the first forward pass.
    _assert_config_error("UpstreamConfig.pyramid", lambda: _click(pyramid=(2.5, 2)))


@pytest.mark.parametrize("field", ["item_hidden", "overarch_hidden"])
def test_empty_hidden_tuples_are_rejected_by_the_config(field):
    # UpstreamNet reads item_hidden[-1] / overarch_hidden[-1]: an empty tuple passes validation today and
    # then crashes with a bare IndexError when the model is built, instead of a ConfigError naming the field.
    _assert_config_error(f"UpstreamConfig.{field}", lambda: UpstreamNet(_click(**{field: ()})))
