"""The paper's experiment scripts (tuned_examples/): arguments, configs, a Tune run logged to MLflow.

Every script's paper (GPU) and CPU configs are built and validated without
loading a model or starting Ray, so a typo in a GPU-only setting fails here. The
Tune test runs two one-iteration trials of a tiny model on generated ALFWorld games
through the same code path as ``python tuned_examples/proxmo_alfworld.py --cpu``
and reads the trials back from the MLflow store (and renders the report from it).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from envs import ALFWORLD, WEBSHOP
from envs.alfworld.env import ALFWorldEnv
from envs.webshop.env import WebShopEnv
from rllib_proxmo.experiments import tune_cli
from rllib_proxmo.experiments import tune_runner as experiments
from rllib_proxmo.experiments.report import build_report
from rllib_proxmo.experiments.scale import CPU, PAPER
from rllib_proxmo.experiments.tracking import flatten_params, run_tags
from rllib_proxmo.experiments.tune_cli import Experiment
from rllib_proxmo.rollout.engines.vllm_engine import installed_build
from rllib_proxmo.testing import build_tiny_chat_model

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    path
    for path in (REPO / "tuned_examples").glob("*.py")
    if path.name not in {"psa_similarity_search.py", "custom_text_env.py"}  # not Experiment scripts
)
ENV_CLASSES = {ALFWORLD: ALFWorldEnv, WEBSHOP: WebShopEnv}


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tuned_examples_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _experiments(module: ModuleType) -> list[Experiment]:
    if hasattr(module, "GRIDS"):
        return [module.experiment(sweep) for sweep in module.GRIDS]
    return [module.EXPERIMENT]


def _argv(experiment: Experiment, cpu: bool) -> list[str]:
    if cpu:
        return ["--cpu"]
    return ["--data-dir", "/data/webshop"] if experiment.env == WEBSHOP else []


def test_every_paper_experiment_has_a_script():
    names = {path.stem for path in SCRIPTS}
    expected = {f"{algo}_{env}" for algo in ("proxmo", "grpo", "gigpo") for env in ("alfworld", "webshop")}
    assert expected | {"ablation_alfworld", "sensitivity_alfworld"} <= names


@pytest.mark.parametrize("cpu", [False, True], ids=["paper", "cpu"])
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_script_parses_and_builds_valid_configs_for_every_grid_point(script, cpu):
    module = _load(script)
    assert (
        module.__doc__ and "Hardware" in module.__doc__ and ("Table 1" in module.__doc__ or "Figure" in module.__doc__)
    )
    for experiment in _experiments(module):
        args = experiments.parse_args(experiment, _argv(experiment, cpu))
        config = experiments.build_config(experiment, args)
        points = experiments.grid_points(experiment, args)
        grid_size = max([1, *(len(values) for values in experiment.grid.values())])
        assert len(points) == len(experiment.estimators) * len(experiment.seeds) * grid_size
        for point in points:
            resolved = experiments.apply_point(config.copy(copy_frozen=False), point)
            resolved.validate()
            assert resolved.seed == point["seed"] and resolved.estimator == point["estimator"]
        # The base env accepts every env_config key (typos in GPU-only settings fail here).
        inspect.signature(ENV_CLASSES[experiment.env]).bind(**config.env_config)
        if config.evaluation_interval:
            inspect.signature(ENV_CLASSES[experiment.env]).bind(**config.evaluation_config["env_config"])
        scale = CPU if cpu else PAPER
        assert args.stop_iters == scale.iterations
        paper_defaults = {} if cpu else experiment.paper_defaults
        assert config.model_config["model_name_or_path"] == paper_defaults.get("model", scale.model)
        assert (config.tasks_per_iteration, config.group_size) == (scale.tasks_per_iteration, scale.group_size)
        assert config.env_config["max_steps"] == {ALFWORLD: 50, WEBSHOP: 15}[experiment.env]
        assert config.model_config.get("max_prompt_tokens") == (
            None if cpu else {ALFWORLD: 2048, WEBSHOP: 4096}[experiment.env]
        )
        if experiment.env == WEBSHOP:  # the release's binary reward at paper scale, the fractional score on CPU
            assert config.env_config["reward"] == ("score" if cpu else "success")


def test_the_7b_example_shards_four_learners_at_paper_scale_and_flags_still_win(capsys):
    experiment = _load(REPO / "tuned_examples" / "proxmo_alfworld_7b.py").EXPERIMENT
    config = experiments.build_config(experiment, experiments.parse_args(experiment, []))
    config.validate()
    assert config.model_config["model_name_or_path"] == "Qwen/Qwen2.5-7B-Instruct"
    assert (config.sharding, config.num_learners, config.num_env_runners, config.micro_batch_size) == ("fsdp", 4, 4, 2)
    overridden = experiments.parse_args(experiment, ["--num-learners", "8", "--sharding", "ddp"])
    assert (overridden.num_learners, overridden.sharding, overridden.num_gpus_per_learner) == (8, "ddp", 1)
    cpu = experiments.build_config(experiment, experiments.parse_args(experiment, ["--cpu"]))
    assert (cpu.sharding, cpu.num_learners, cpu.model_config["model_name_or_path"]) == ("ddp", 0, CPU.model)
    with pytest.raises(SystemExit):  # argparse: "--micro-batch-size: ... positive integer"
        experiments.parse_args(experiment, ["--micro-batch-size", "0"])
    assert "--micro-batch-size" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"paper_defaults can only fill flags left unset, not \['engine'\]"):
        experiments.parse_args(Experiment("x", ALFWORLD, ("proxmo",), paper_defaults={"engine": "vllm"}), [])


def test_paper_settings_are_the_releases():
    args = experiments.parse_args(_load(REPO / "tuned_examples" / "proxmo_alfworld.py").EXPERIMENT, [])
    config = experiments.build_config(_load(REPO / "tuned_examples" / "proxmo_alfworld.py").EXPERIMENT, args)
    assert (config.alpha, config.beta, config.tau, config.gamma, config.omega) == (4.0, 0.1, 0.1, 0.95, 1.0)
    assert (config.lr, config.clip_param, config.kl_coeff, config.entropy_coeff) == (1e-6, 0.2, 0.01, 0.001)
    assert config.model_config["model_name_or_path"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert config.model_config["max_new_tokens"] == 512 and config.model_config["eval_temperature"] == 0.4
    assert config.evaluation_config["env_config"]["split"] == "unseen"
    assert args.seeds == [0, 1, 2] and args.stop_iters == 150


def test_command_line_overrides_and_search_space():
    experiment = _load(REPO / "tuned_examples" / "ablation_alfworld.py").EXPERIMENT
    args = experiments.parse_args(
        experiment,
        ["--cpu", "--model", "some/model", "--seeds", "3", "--stop-iters", "7", "--num-env-runners", "2"],
    )
    assert args.stop_iters == 7 and args.seeds == [3] and args.num_env_runners == 2
    config = experiments.build_config(experiment, args)
    assert config.model_config["model_name_or_path"] == "some/model"
    space = experiments.search_space(experiment, args, config)
    assert space.estimator == {"grid_search": ["proxmo", "proxmo_no_psc", "proxmo_no_psa", "gigpo"]}
    assert space.seed == {"grid_search": [3]}
    assert experiments.stop_criteria(args) == {"training_iteration": 7}


def test_sensitivity_sweeps_one_hyperparameter_with_the_others_at_the_optimum():
    module = _load(REPO / "tuned_examples" / "sensitivity_alfworld.py")
    argv = ["--cpu", "--sweep", "tau", "--seeds", "0"]
    assert module.chosen_sweep(argv) == "tau" and module.chosen_sweep(["--sweep", "gamma"]) is None
    experiment = module.experiment("tau")
    args = experiments.parse_args(experiment, argv, parents=[module.SWEEP_PARSER])
    assert args.sweep == "tau" and args.seeds == [0]
    points = experiments.grid_points(experiment, args)
    assert [point["tau"] for point in points] == list(module.GRIDS["tau"])
    config = experiments.build_config(experiment, args)
    assert (config.alpha, config.beta) == (4.0, 0.1)
    assert all(0.1 in values for values in (module.GRIDS["beta"], module.GRIDS["tau"])) and 4.0 in module.GRIDS["alpha"]
    with pytest.raises(ValueError, match="sweep"):
        module.experiment("gamma_typo")


def test_bad_input_is_refused_with_a_clear_message(capsys):
    webshop = _load(REPO / "tuned_examples" / "proxmo_webshop.py").EXPERIMENT
    with pytest.raises(SystemExit):
        experiments.parse_args(webshop, [])
    assert "--data-dir" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not sweepable"):
        Experiment(name="x", env=ALFWORLD, estimators=("proxmo",), grid={"alhpa": [1.0]})
    with pytest.raises(ValueError, match="env must be"):
        Experiment(name="x", env="CartPole-v1", estimators=("proxmo",))
    with pytest.raises(ValueError, match="estimator"):
        experiments.run(webshop, experiments.parse_args(webshop, ["--cpu", "--estimators", "proxmo", "ppo"]))
    assert not ray.is_initialized()


#: Scripts that show user code (an env class beside ProxMOConfig) and may import the framework at the top.
USER_CODE_EXAMPLES = {"custom_text_env"}


def test_every_script_prints_help_without_importing_ray_or_torch():
    # All scripts at once, one interpreter each: every --help exits 0, the experiment scripts (and the PSA
    # search) before Ray, torch or MLflow is imported.
    probe = (
        "import runpy, sys\n"
        "sys.argv = [sys.argv[1], '--help']\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as stop:\n    code = stop.code\n"
        "print('EXIT', code, *sorted(name for name in ('ray', 'torch', 'mlflow') if name in sys.modules))\n"
    )
    scripts = sorted((REPO / "tuned_examples").glob("*.py"))
    running = {
        path.stem: subprocess.Popen(
            [sys.executable, "-c", probe, str(path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in scripts
    }
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, (name, err[-2000:])
        assert out.startswith("usage:") and "--help" in out, name
        heavy = set(out.rstrip().splitlines()[-1].split()[2:])
        assert out.rstrip().splitlines()[-1].startswith("EXIT 0"), (name, out[-300:])
        assert not heavy or name in USER_CODE_EXAMPLES, (name, heavy)
    sensitivity = running["sensitivity_alfworld"].args
    assert "--sweep" in subprocess.run(sensitivity, cwd=REPO, capture_output=True, text=True).stdout


def test_rllib_flags_keep_rllib_names_and_defaults():
    from ray.rllib.examples.utils import add_rllib_example_script_args

    rllib = vars(add_rllib_example_script_args(argparse.ArgumentParser(), default_reward=1.0).parse_args([]))
    for flag, keywords in tune_cli.RLLIB_FLAGS:
        name = flag.removeprefix("--").replace("-", "_")
        assert name in rllib, flag
        if flag != "--stop-iters":  # its default is the scale's number of iterations
            assert keywords.get("default", False) == rllib[name], flag
    experiment = Experiment(name="x", env=ALFWORLD, estimators=("proxmo",))
    args = experiments.parse_args(experiment, ["--cpu", "--num-learners", "2"])
    merged = tune_cli.rllib_namespace(args)
    assert set(vars(merged)) == set(rllib) | set(vars(args))
    assert (merged.num_learners, merged.stop_iters, merged.algo, merged.evaluation_interval) == (2, 2, "PPO", 0)


def test_rllib_flags_that_do_not_apply_are_refused(capsys):
    experiment = Experiment(name="x", env=ALFWORLD, estimators=("proxmo",))
    for argv in (["--algo", "PPO"], ["--evaluation-interval", "3"], ["--wandb-key", "k"]):
        with pytest.raises(SystemExit):
            experiments.parse_args(experiment, argv)
        assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("env_id", [ALFWORLD, WEBSHOP])
def test_cpu_variant_envs_are_built_from_their_config(env_id):
    experiment = Experiment(name="x", env=env_id, estimators=("proxmo",))
    config = experiments.build_config(experiment, experiments.parse_args(experiment, ["--cpu"]))
    env = gym.make(env_id, **config.env_config)
    observation, info = env.reset(seed=0)
    assert isinstance(observation, str) and observation
    env.close()


def _result(iteration: int, success: float, **extra: dict) -> dict:
    """A training result with the keys the history row reads, as RLlib's Algorithm.train() returns it."""
    return {
        "training_iteration": iteration,
        "env_runners": {"success_rate": success, "format_valid_rate": 1.0, "score_mean": success},
        "proxmo": {
            "generated_tokens_per_s": 10.0,
            "prompt_tokens": 400.0,
            "time_sampling_s": 1.6,
            "turns_per_s": 7.5,
            "time_iteration_s": 2.0,
        },
        **extra,
    }


def test_mlflow_tracking_records_every_trial_as_the_main_job_records_its_run(tmp_path):
    experiment = Experiment(name="x", env=ALFWORLD, estimators=("proxmo", "grpo"), grid={"alpha": [1.0, 4.0]})
    args = tune_cli.parse_args(experiment, ["--cpu", "--seeds", "0"])
    config = experiments.build_config(experiment, args)
    points = experiments.grid_points(experiment, args)[:3]
    trials = [
        Trial("ProxMO", config=experiments.apply_point(config.copy(copy_frozen=False), point).to_dict(), stub=True)
        for point in points
    ]
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    callback = experiments.MLflowTracking(uri, "tune", "cpu", checkpoint_max_bytes=2**20)
    for trial in trials:
        callback.on_trial_start(0, trials, trial)
    evaluation = {"success_rate": 0.5, "success_rate/pick": 1.0, "num_episodes": 2}
    callback.on_trial_result(1, trials, trials[0], _result(1, 0.0, config=trials[0].config))
    callback.on_trial_result(2, trials, trials[0], _result(2, 0.25, evaluation={"env_runners": evaluation}))
    callback.on_trial_complete(2, trials, trials[0])
    callback.on_trial_result(2, trials, trials[1], _result(1, 0.5))
    callback.on_trial_error(3, trials, trials[1])
    callback.on_trial_start(3, trials, trials[1])  # a restarted trial keeps its (ended) run
    callback.on_trial_result(3, trials, trials[2], _result(1, 1.0))
    callback.on_experiment_end(trials)  # e.g. Ctrl-C: the unfinished trial is KILLED

    client = MlflowClient(tracking_uri=uri)
    runs = {run.info.run_name: run for run in client.search_runs([client.get_experiment_by_name("tune").experiment_id])}
    assert sorted(runs) == sorted(str(trial) for trial in trials)
    statuses = [runs[str(trial)].info.status for trial in trials]
    assert statuses == ["FINISHED", "FAILED", "KILLED"]
    for trial, point in zip(trials, points):
        run = runs[str(trial)]
        assert run.data.params == flatten_params(trial.config)
        assert run.data.tags.items() >= run_tags(trial.config, "cpu").items()
        assert (run.data.tags["estimator"], run.data.tags["alpha"]) == (point["estimator"], str(point["alpha"]))
        assert run.data.tags["mlflow.source.git.commit"] == run.data.tags["git_commit"]
        artifacts = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
        tables = {"evaluation.csv", "evaluation.md"} if trial is trials[0] else set()
        assert artifacts == {"learning_curve.png", *tables}
    first = runs[str(trials[0])].info.run_id
    success = client.get_metric_history(first, "env_runners/success_rate")
    assert [(m.step, m.value) for m in success] == [(1, 0.0), (2, 0.25)]
    assert [m.step for m in client.get_metric_history(first, "evaluation/env_runners/success_rate")] == [2]
    assert not any(key.startswith("config/") for key in runs[str(trials[0])].data.metrics)


@pytest.mark.slow
@pytest.mark.skipif(installed_build() != "cpu", reason="needs vLLM's CPU build (make install adds it)")
def test_a_tuned_example_runs_an_iteration_with_vllm_on_cpu_runners(tmp_path):
    # vLLM's CPU attention needs heads of 32 or more: 2 heads of 64.
    words = "go to take put open look cabinet drawer 1 2 <action> </action> <think> </think>".split()
    model = build_tiny_chat_model(tmp_path / "tiny", words, hidden_size=128, num_heads=2)
    experiment = _load(REPO / "tuned_examples" / "proxmo_alfworld.py").EXPERIMENT
    argv = ["--cpu", "--model", str(model), "--seeds", "0", "--stop-iters", "1", "--no-tune", "--no-mlflow"]
    [result] = tune_cli.main(experiment, [*argv, "--engine", "vllm", "--num-env-runners", "1"])
    assert result["training_iteration"] == 1
    assert result["env_runners"]["num_episodes"] == CPU.tasks_per_iteration * CPU.group_size
    assert result["learners"]["default_policy"]["sampler_logp_gap_max"] <= 1e-4


@pytest.mark.slow
def test_tune_runs_two_trials_that_log_to_mlflow(tmp_path, monkeypatch):
    words = "go to take put open look cabinet drawer 1 2 <action> </action> <think> </think>".split()
    model = build_tiny_chat_model(tmp_path / "tiny", words)
    monkeypatch.setenv("RAY_STORAGE", str(tmp_path / "ray_results"))
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    experiment = _load(REPO / "tuned_examples" / "proxmo_alfworld.py").EXPERIMENT
    argv = ["--cpu", "--model", str(model), "--seeds", "0", "1", "--stop-iters", "1", "--tracking-uri", store]
    results = tune_cli.main(experiment, argv)
    assert len(results) == 2 and not results.errors

    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("proxmo-alfworld").experiment_id])
    assert len(runs) == 2
    assert sorted(run.data.tags["seed"] for run in runs) == ["0", "1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert (tags["estimator"], tags["env"], tags["model"], tags["scale"]) == ("proxmo", ALFWORLD, str(model), "cpu")
        assert len(tags["git_commit"]) == 40 and tags["mlflow.source.git.commit"] == tags["git_commit"]
        assert tags["alpha"] == "4.0" and tags["psa_scope"] == params["psa_scope"]
        assert params["estimator"] == "proxmo" and params["tasks_per_iteration"] == str(CPU.tasks_per_iteration)
        assert metrics["training_iteration"] == 1
        assert 0.0 <= metrics["env_runners/success_rate"] <= 1.0
        assert metrics["env_runners/num_episodes"] == CPU.tasks_per_iteration * CPU.group_size
        assert any(key.startswith("env_runners/success_rate/") for key in metrics)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "env_runners/success_rate")] == [1]
        assert "learning_curve.png" in {artifact.path for artifact in client.list_artifacts(run.info.run_id)}

    text, images = build_report(client, ["proxmo-alfworld"], tmp_path / "report")
    assert "| proxmo | 2 |" in text and images[0].stat().st_size > 0


@pytest.mark.parametrize(("script", "norm"), [("gigpo_alfworld", "mean_std_norm"), ("gigpo_webshop", "mean_norm")])
def test_baselines_shipped_runs_verl_agents_gigpo_with_the_recipes_normalisation(script, norm):
    experiment = _load(REPO / "tuned_examples" / f"{script}.py").EXPERIMENT
    assert experiments.parse_args(experiment, ["--cpu"]).estimators == ["gigpo"]
    args = experiments.parse_args(experiment, ["--cpu", "--baselines", "shipped"])
    assert args.estimators == ["gigpo_official"]
    config = experiments.build_config(experiment, args)
    config.validate()
    assert config.advantage_config.gigpo_norm == norm
