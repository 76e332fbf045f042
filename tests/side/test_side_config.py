"""SideConfig: defaults, validation with ConfigError naming the field, dict round trip."""

import pytest

from duet_sdk.errors import ConfigError
from duet_sdk.serialization import from_dict, to_dict
from duet_sdk.side import SideConfig


def test_defaults_are_four_levels_of_256_greedy():
    config = SideConfig()
    assert (config.levels, config.codebook_size, config.beam_width, config.min_code_usage) == (4, 256, 1, 1)


@pytest.mark.parametrize("field, value", [
    ("levels", 0), ("levels", True), ("levels", 2.0), ("codebook_size", 1), ("kmeans_iters", 0),
    ("beam_width", 0), ("min_code_usage", -1), ("seed", -1), ("seed", 2**32),
])
def test_invalid_value_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        SideConfig(**{field: value})
    assert info.value.field == f"SideConfig.{field}"


def test_min_code_usage_zero_is_allowed_and_disables_reseeding():
    assert SideConfig(min_code_usage=0).min_code_usage == 0


def test_round_trips_through_a_plain_dict():
    config = SideConfig(levels=2, codebook_size=1024, beam_width=4, seed=3)
    assert from_dict(SideConfig, to_dict(config)) == config
