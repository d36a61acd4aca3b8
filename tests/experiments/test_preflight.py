"""Bad flags of the command lines fail within seconds, before Ray, MLflow or a model start.

Each case calls the real ``main`` of the main job or of a tuned example: it must exit with
argparse's status 2 and a message naming the flag, in under 3 s, without importing Ray or
torch and without creating an MLflow store.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from rllib_proxmo.experiments import main_job, preflight, tune_cli
from rllib_proxmo.experiments.preflight import grpc_server_problem, local_gpu_count

REPO = Path(__file__).resolve().parents[2]
UNCACHED_HUB_ID = "Qwen/Qwen2.5-0.5B-Instruct-not-cached"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _refused(run, message: str, capsys) -> None:
    heavy_before = {name for name in ("ray", "torch") if name in sys.modules}
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        run()
    seconds = time.perf_counter() - start
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert seconds < 3.0, seconds
    assert {name for name in ("ray", "torch") if name in sys.modules} == heavy_before


@pytest.fixture
def offline_hub(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def clean_run(tmp_path, monkeypatch):
    """Run in ``tmp_path`` with its own MLflow store and no cluster address."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()  # no MLflow run


MAIN_CASES = [
    (["--estimator", "ppo"], "--estimator: unknown estimator 'ppo'; choose one of ('proxmo'"),
    (["--psa-scope", "batch"], "--psa-scope: "),
    (["--tau", "-1"], "--tau: tau must be >="),
    (["--gamma", "2"], "--gamma: gamma must be in [0, 1]"),
    (["--estimator", "proxmo_official", "--beta", "0.3"], "credit-assignment flags: proxmo_official uses"),
    (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["--env", "NoSuch-v0"], "--env 'NoSuch-v0' is not a registered Gymnasium id"),
    (["--env", "nosuchmodule:Id"], "--env 'nosuchmodule:Id': cannot import module 'nosuchmodule'"),
    (["--env", "tests.text_env:NoSuch-v0"], "--env 'tests.text_env:NoSuch-v0' is not a registered Gymnasium id"),
    (["--env-config", '{"num_game": 3}'], "--env-config: ALFWorld-v0 takes no setting ['num_game']; its settings are"),
    (
        ["--env", "tests.text_env:TextGuess-v0", "--env-config", '{"colour": 1}'],
        "--env-config: TextGuess-v0 takes no setting ['colour']",
    ),
    (["--llm-env-config", '{"max_steps": 3}'], "--llm-env-config: llm_env_config has unknown keys ['max_steps']"),
    (["--model", "/nonexistent/model"], "--model: Model directory '/nonexistent/model' does not exist"),
    (["--model", "bad id!!"], "--model: model 'bad id!!' is neither an embedded alias"),
]


@pytest.mark.parametrize(("argv", "message"), MAIN_CASES)
def test_main_job_refuses_a_bad_flag_within_seconds(argv, message, clean_run, capsys):
    _refused(lambda: main_job.main(argv), message, capsys)


def test_an_uncached_hub_id_fails_at_once_offline_and_says_how_to_use_a_local_directory(offline_hub, clean_run, capsys):
    _refused(
        lambda: main_job.main(["--model", UNCACHED_HUB_ID]),
        f"--model: model '{UNCACHED_HUB_ID}' is not in the local Hugging Face cache",
        capsys,
    )


@pytest.mark.skipif(local_gpu_count() > 0, reason="this machine has a GPU")
def test_a_gpu_on_a_machine_without_one_is_refused(clean_run, capsys):
    _refused(
        lambda: main_job.main(["--num-gpus-per-learner", "1"]),
        "--num-gpus-per-learner 1 asks for a GPU but this machine has none visible",
        capsys,
    )


def test_a_cluster_address_where_nothing_answers_is_refused(clean_run, capsys):
    port = _closed_port()
    _refused(
        lambda: main_job.main(["--address", f"127.0.0.1:{port}"]),
        f"--address 127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port}",
        capsys,
    )
    _refused(lambda: main_job.main(["--address", "nonsense"]), "--address: 'nonsense' is not host:port", capsys)


def test_address_auto_without_a_cluster_on_this_machine_is_refused(clean_run, monkeypatch, capsys):
    monkeypatch.setattr(preflight, "RAY_CURRENT_CLUSTER_FILE", clean_run / "ray" / "ray_current_cluster")
    _refused(lambda: main_job.main(["--address", "auto"]), "--address auto: no Ray cluster was started", capsys)


def test_a_server_that_does_not_speak_grpc_is_not_a_cluster():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        problem = grpc_server_problem("127.0.0.1", server.getsockname()[1], 0.5)
    assert problem is not None and ("TimeoutError" in problem or "does not speak gRPC" in problem)


@pytest.mark.slow
def test_a_live_ray_cluster_passes_the_address_check():
    import ray

    ray.init(num_cpus=1, include_dashboard=False)
    try:
        host, port = ray.get_runtime_context().gcs_address.rsplit(":", 1)
        assert grpc_server_problem(host, int(port), 2.0) is None
    finally:
        ray.shutdown()


def _tuned_example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("proxmo_alfworld", REPO / "tuned_examples" / "proxmo_alfworld.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT


TUNE_CASES = [
    (["--cpu", "--estimators", "proxmo", "ppo"], "--estimators: unknown ['ppo']; choose from proxmo, grpo"),
    (["--cpu", "--seeds", "-1"], "--seeds must be ints >= 0, got [-1]"),
    (["--cpu", "--stop-iters", "0"], "--stop-iters must be >= 1, got 0"),
    (["--cpu", "--num-env-runners", "-1"], "--num-env-runners must be >= 0, got -1"),
    (["--cpu", "--model", "/nonexistent/model"], "--model: Model directory '/nonexistent/model' does not exist"),
]


@pytest.mark.parametrize(("argv", "message"), TUNE_CASES)
def test_tuned_examples_refuse_a_bad_flag_within_seconds(argv, message, clean_run, capsys):
    experiment = _tuned_example()
    _refused(lambda: tune_cli.main(experiment, argv), message, capsys)


def test_tuned_examples_refuse_the_paper_model_offline_gpus_and_a_dead_cluster(
    offline_hub, clean_run, monkeypatch, capsys
):
    experiment = _tuned_example()
    _refused(
        lambda: tune_cli.main(experiment, ["--model", UNCACHED_HUB_ID]),
        "is not in the local Hugging Face cache",
        capsys,
    )
    if local_gpu_count() == 0:
        _refused(
            lambda: tune_cli.main(experiment, ["--cpu", "--num-gpus-per-learner", "1"]),
            "--num-gpus-per-learner 1 asks for a GPU",
            capsys,
        )
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_closed_port()}")
    _refused(lambda: tune_cli.main(experiment, ["--cpu"]), "$RAY_ADDRESS 127.0.0.1:", capsys)
