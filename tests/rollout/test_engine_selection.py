"""model_config["engine"] picks the env runners' engine; every wrong choice fails early and says why.

On this machine vLLM is not installed and there is no GPU: the vLLM engine's build
must refuse with one error naming both, before any rollout.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config

from rllib_proxmo.experiments import main_job, tune_cli
from rllib_proxmo.experiments.tune_runner import build_config as tune_build_config
from rllib_proxmo.rollout.engine_choice import ENGINES, check_engine
from rllib_proxmo.rollout.engines import HFEngine
from rllib_proxmo.rollout.engines.vllm_engine import build_problems, local_model_dir
from rllib_proxmo.rollout.env_runner import GroupedEnvRunner, SamplerSettings
from rllib_proxmo.testing import build_tiny_chat_model
from tests.rollout.test_env_runner import _config
from tests.text_env import DEFAULT_BUTTONS

VLLM_MISSING = "vllm is not installed (pip install 'rllib-proxmo[vllm]', vLLM 0.33.0)"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny"), ["press", *DEFAULT_BUTTONS]))


def test_the_engine_setting_takes_hf_or_vllm_only():
    assert ENGINES == ("hf", "vllm") and SamplerSettings().engine == "hf"
    assert SamplerSettings.from_model_config({"engine": "vllm"}).engine == "vllm"
    for wrong in ("vlm", "HF", None):
        with pytest.raises(ValueError, match=r"model_config engine must be one of \['hf', 'vllm'\], got"):
            check_engine(wrong)


def test_config_validation_refuses_an_unknown_engine(model_dir):
    with pytest.raises(ValueError, match=r"model_config engine must be one of \['hf', 'vllm'\], got 'vlm'"):
        _config(model_dir, engine="vlm").validate()


def test_config_validation_names_every_reason_vllm_cannot_run(model_dir):
    with pytest.raises(ValueError) as error:
        _config(model_dir, engine="vllm", max_prompt_tokens=64, vllm_max_model_len=32).validate()
    message = str(error.value)
    assert message.startswith("model_config engine='vllm' cannot run: ")
    for reason in (
        VLLM_MISSING,
        "vllm_max_model_len=32 is below max_prompt_tokens + max_new_tokens = 64 + 4",
        "set num_env_runners >= 1",
        "set num_gpus_per_env_runner > 0",
    ):
        assert reason in message
    # Remote runners with a GPU each: only the missing package is left.
    gpu_runners = _config(model_dir, engine="vllm").env_runners(num_env_runners=2, num_gpus_per_env_runner=0.5)
    with pytest.raises(ValueError) as error:
        gpu_runners.validate()
    assert error.value.args[0].splitlines()[0] == f"model_config engine='vllm' cannot run: {VLLM_MISSING}"


def test_an_evaluation_without_runners_of_its_own_is_not_held_to_the_runner_rules(model_dir):
    config = _config(model_dir, engine="vllm").env_runners(num_env_runners=1, num_gpus_per_env_runner=1)
    evaluation = config.evaluation(evaluation_num_env_runners=0).get_evaluation_config_object()
    with pytest.raises(ValueError) as error:
        evaluation.validate()
    assert error.value.args[0].splitlines()[0] == f"model_config engine='vllm' cannot run: {VLLM_MISSING}"


def test_a_remote_runner_refuses_to_build_vllm_here_naming_package_and_gpu(model_dir):
    config = _config(model_dir, engine="vllm")
    with pytest.raises(RuntimeError) as error:
        GroupedEnvRunner(config=config, worker_index=1)
    message = str(error.value)
    assert message.startswith("model_config engine='vllm' cannot run on this env runner: ")
    assert VLLM_MISSING in message and "samples on cpu, not a CUDA GPU" in message
    assert "architectures" not in message  # the tiny Llama is supported


def test_the_local_runner_samples_with_the_hf_engine_whatever_the_setting(model_dir):
    runner = GroupedEnvRunner(config=_config(model_dir, engine="vllm"), worker_index=0)
    assert isinstance(runner.engine, HFEngine) and runner.engine_name == "hf"


def test_an_unsupported_architecture_is_named(tmp_path):
    GPT2Config(n_layer=1, n_embd=16, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(tmp_path)
    problems = build_problems(tmp_path, torch.device("cpu"))
    assert any(
        "architectures ['GPT2LMHeadModel'] are not among ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM']"
        in problem
        for problem in problems
    )


def test_vllm_never_loads_from_the_hub(model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert str(local_model_dir(model_dir)) == model_dir
    # An uncached hub id is refused before vLLM could try to download it (the offline check names the fix).
    with pytest.raises((ValueError, FileNotFoundError), match="'no-org/no-model' is n"):
        local_model_dir("no-org/no-model")


def test_the_command_lines_take_hf_or_vllm_and_pass_it_to_the_model_config(capsys):
    for parse in (main_job.parse_args, lambda argv: tune_cli.parse_args(_experiment(), argv)):
        with pytest.raises(SystemExit):
            parse(["--engine", "vlm"])
        assert "argument --engine: invalid choice: 'vlm' (choose from 'hf', 'vllm')" in capsys.readouterr().err
    args = main_job.parse_args(["--engine", "vllm", "--num-env-runners", "1", "--num-gpus-per-env-runner", "1"])
    config = main_job.build_config(args)
    assert config.model_config["engine"] == "vllm" and config.num_gpus_per_env_runner == 1
    assert main_job.build_config(main_job.parse_args([])).model_config["engine"] == "hf"
    tune_args = tune_cli.parse_args(_experiment(), ["--cpu", "--engine", "vllm"])
    assert tune_build_config(_experiment(), tune_args).model_config["engine"] == "vllm"


def _experiment() -> tune_cli.Experiment:
    return tune_cli.Experiment(name="engine-test", env="ALFWorld-v0", estimators=("proxmo",))
