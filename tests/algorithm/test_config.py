"""ProxMOConfig settings reach validation exactly as the user gave them (no Ray, no model)."""

from __future__ import annotations

import pytest

from rllib_proxmo.algorithm.proxmo import ProxMOConfig

ENV_ID = "tests.text_env:TextGuess-v0"


def _config(**training) -> ProxMOConfig:
    return (
        ProxMOConfig().environment(ENV_ID).rl_module(model_config={"model_name_or_path": "unused"}).training(**training)
    )


def _as_built(config: ProxMOConfig) -> ProxMOConfig:
    """The config an Algorithm runs with: ``Algorithm.__init__`` rebuilds it from its state."""
    return ProxMOConfig.from_state(config.get_state())


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"group_size": -1}, "group_size must be >= 1, got -1"),
        ({"tasks_per_iteration": -1}, "tasks_per_iteration must be >= 1, got -1"),
        ({"tau": -1}, "tau must be >= 2.23e-308.*got -1"),
        ({"alpha": -1}, "alpha must be > 0"),
        ({"gamma": -1}, "gamma must be in"),
        ({"minibatch_size": -1}, "minibatch_size"),
        ({"micro_batch_size": -1}, "micro_batch_size must be >= 1, got -1"),
        ({"num_epochs": -1}, "num_epochs must be >= 1, got -1"),
        ({"clip_param": -1}, "clip_param must be > 0, got -1"),
        ({"kl_coeff": -1}, "kl_coeff"),
    ],
)
def test_a_setting_of_minus_one_reaches_validation(setting, message):
    with pytest.raises(ValueError, match=message):
        _config(**setting).build_algo()


def test_omega_minus_one_means_minus_one():
    built = _as_built(_config(omega=-1.0, beta=-1, sample_retries=1))
    assert built.omega == -1.0 and built.advantage_config.omega == -1.0
    assert built.beta == -1
    built.validate()


def test_seed_minus_one_is_rejected_not_dropped():
    config = _config().debugging(seed=-1)
    assert _as_built(config).seed == -1
    with pytest.raises(ValueError, match="seed must be None or an int >= 0, got -1"):
        config.build_algo()
    assert _as_built(_config().debugging(seed=3)).seed == 3


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"max_turns": 0}, "max_turns must be None .* or an int >= 1, got 0"),
        ({"max_turns": 2.5}, "max_turns must be None"),
        ({"sample_retries": -2}, "sample_retries .* must be an int >= 0, got -2"),
    ],
)
def test_sampling_settings_are_validated(setting, message):
    with pytest.raises(ValueError, match=message):
        _config(**setting).validate()


def test_sampling_settings_that_are_legal_pass():
    _config(max_turns=None, sample_retries=0).validate()
    _config(max_turns=1, sample_retries=3).validate()


def test_unknown_llm_env_config_keys_are_named_by_validate_and_by_the_env_factory():
    from rllib_proxmo.rollout.env_factory import make_text_env

    config = _config(llm_env_config={"max_steps": 3})
    with pytest.raises(ValueError, match=r"llm_env_config has unknown keys \['max_steps'\]; allowed: template"):
        config.validate()
    with pytest.raises(ValueError, match=r"unknown keys \['max_steps'\].*base env go in env_config"):
        make_text_env(config, worker_index=0, index=0)
    make_text_env(_config(llm_env_config={"require_think": False}), worker_index=0, index=0).close()
