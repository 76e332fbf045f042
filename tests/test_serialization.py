import json

import pytest

from duet_sdk import serialization
from duet_sdk.data.synthetic import SyntheticConfig
from duet_sdk.errors import ConfigError
from duet_sdk.models.config import UpstreamConfig
from duet_sdk.training.presets import upstream_config


@pytest.mark.parametrize("kind", ["click", "conv"])
@pytest.mark.parametrize("preset", ["demo", "default"])
def test_upstream_config_round_trips_through_json(kind, preset):
    config = upstream_config(kind, SyntheticConfig().schema(), preset)
    data = json.loads(json.dumps(serialization.to_dict(config)))
    assert serialization.from_dict(UpstreamConfig, data) == config


def test_unknown_key_is_rejected_with_its_path():
    data = serialization.to_dict(upstream_config("click", SyntheticConfig().schema()))
    data["attention"]["heads"] = 4
    with pytest.raises(ConfigError, match=r"UpstreamConfig\.attention\.heads"):
        serialization.from_dict(UpstreamConfig, data)


def test_wrong_type_is_rejected_with_its_path():
    data = serialization.to_dict(upstream_config("click", SyntheticConfig().schema()))
    data["d_model"] = "wide"
    with pytest.raises(ConfigError, match=r"UpstreamConfig\.d_model: expected int"):
        serialization.from_dict(UpstreamConfig, data)


def test_invalid_value_is_rejected_by_the_config_itself():
    data = serialization.to_dict(upstream_config("conv", SyntheticConfig().schema()))
    data["primary_task"] = "revenue"
    with pytest.raises(ConfigError, match="primary_task"):
        serialization.from_dict(UpstreamConfig, data)
