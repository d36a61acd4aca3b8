"""The report CLI on a real MLflow SQLite store written here with MLflow's client.

The runs carry the metric names and tags that Tune's MLflow logger writes for
``rllib_proxmo.experiments`` trials (``env_runners/success_rate/<type>``,
``evaluation/env_runners/...``, ``training_iteration``; tags ``estimator``, ``env``,
``seed``), with known values, so every table cell can be checked exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from rllib_proxmo.experiments.report import build_report, main

#: (estimator, seed) -> success rate per iteration (1, 2, 3) and per task type at the end.
ALFWORLD_RUNS = {
    ("proxmo", 0): ([0.1, 0.5, 0.4], {"pick": 0.5, "look": 0.25}),
    ("proxmo", 1): ([0.2, 0.3, 0.6], {"pick": 1.0, "look": 0.75}),
    ("grpo", 0): ([0.0, 0.1, 0.2], {"pick": 0.25}),
}


def _log_run(client: MlflowClient, experiment_id: str, tags: dict[str, str], metrics: list[dict[str, float]]) -> str:
    run = client.create_run(experiment_id, tags=tags)
    client.log_param(run.info.run_id, "estimator", tags.get("estimator", "?"))
    for iteration, values in enumerate(metrics, start=1):
        client.log_metric(run.info.run_id, "training_iteration", iteration, step=iteration)
        for key, value in values.items():
            client.log_metric(run.info.run_id, key, value, step=iteration)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module (creating an MLflow SQLite schema takes seconds)."""
    directory = tmp_path_factory.mktemp("mlruns")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    alfworld = client.create_experiment("alf")
    run_ids = {}
    for (estimator, seed), (curve, by_type) in ALFWORLD_RUNS.items():
        metrics = [{"env_runners/success_rate": value} for value in curve]
        metrics[-1].update({f"env_runners/success_rate/{task}": value for task, value in by_type.items()})
        tags = {"estimator": estimator, "seed": str(seed), "env": "ALFWorld-v0"}
        run_ids[(estimator, seed)] = _log_run(client, alfworld, tags, metrics)
    webshop = client.create_experiment("shop")
    for seed, (score, success) in enumerate([(0.6, 0.3), (0.8, 0.5)]):
        metrics = [
            {"env_runners/success_rate": 0.1, "env_runners/score_mean": 0.2},
            {
                "env_runners/success_rate": 0.2,
                "env_runners/score_mean": 0.3,
                "evaluation/env_runners/success_rate": success,
                "evaluation/env_runners/score_mean": score,
            },
        ]
        _log_run(client, webshop, {"estimator": "gigpo", "seed": str(seed), "env": "WebShop-v0"}, metrics)
    return uri, client, run_ids


def _row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{text}")


def test_alfworld_table_gives_mean_and_std_over_seeds_of_final_values(store, tmp_path):
    _, client, _ = store
    text, images = build_report(client, ["alf"], tmp_path / "out")
    header = _row(text, "estimator")
    assert header == ["estimator", "n", "Pick", "Look", "All"]
    proxmo = dict(zip(header, _row(text, "proxmo")))
    assert proxmo["n"] == "2"
    assert proxmo["Pick"] == f"75.0 ± {np.std([50, 100], ddof=1):.1f}"
    assert proxmo["Look"] == f"50.0 ± {np.std([25, 75], ddof=1):.1f}"
    assert proxmo["All"] == f"50.0 ± {np.std([40, 60], ddof=1):.1f}"
    grpo = dict(zip(header, _row(text, "grpo")))
    assert (grpo["n"], grpo["Pick"], grpo["Look"], grpo["All"]) == ("1", "25.0", "–", "20.0")
    assert (tmp_path / "out" / "report.md").read_text() == text
    assert "training episodes" in text


def test_best_reduction_takes_each_runs_maximum(store, tmp_path):
    _, client, _ = store
    text, _ = build_report(client, ["alf"], tmp_path / "out", reduce="best")
    header = _row(text, "estimator")
    assert dict(zip(header, _row(text, "proxmo")))["All"] == f"55.0 ± {np.std([50, 60], ddof=1):.1f}"


def test_webshop_table_prefers_evaluation_metrics(store, tmp_path):
    _, client, _ = store
    text, _ = build_report(client, ["shop"], tmp_path / "out")
    header = _row(text, "estimator")
    assert header == ["estimator", "n", "Score", "Succ."]
    assert _row(text, "gigpo")[2:] == [
        f"70.0 ± {np.std([60, 80], ddof=1):.1f}",
        f"40.0 ± {np.std([30, 50], ddof=1):.1f}",
    ]
    assert "evaluation episodes" in text
    training, _ = build_report(client, ["shop"], tmp_path / "out", source="training")
    assert _row(training, "gigpo")[2:] == ["30.0 ± 0.0", "20.0 ± 0.0"]


def test_run_ids_and_mixed_envs_give_one_table_and_one_curve_per_env(store, tmp_path):
    _, client, run_ids = store
    targets = [run_ids[("proxmo", 0)], run_ids[("grpo", 0)], "shop"]
    text, images = build_report(client, targets, tmp_path / "out", group_by="seed")
    assert "### ALFWorld-v0" in text and "### WebShop-v0" in text
    assert _row(text, "seed")[0] == "seed"
    assert sorted(image.name for image in images) == [
        "learning_curves_ALFWorld-v0.png",
        "learning_curves_WebShop-v0.png",
    ]
    for image in images:
        pixels = imread(image)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.std() > 0


def test_cli_prints_the_table(store, tmp_path, capsys):
    uri, _, _ = store
    main(["alf", "--tracking-uri", uri, "--output-dir", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert "| proxmo | 2 |" in out and "learning_curves_ALFWorld-v0.png" in out
    assert (tmp_path / "cli" / "learning_curves_ALFWorld-v0.png").exists()


def test_bad_input_is_refused_with_a_clear_message(store, tmp_path):
    uri, client, _ = store
    with pytest.raises(ValueError, match="neither an MLflow experiment name nor a run id"):
        build_report(client, ["no-such-experiment"], tmp_path / "out")
    with pytest.raises(ValueError, match="no MLflow run with id"):
        build_report(client, ["0" * 32], tmp_path / "out")
    with pytest.raises(ValueError, match="no tag or parameter 'tau'"):
        build_report(client, ["alf"], tmp_path / "out", group_by="tau")
    with pytest.raises(ValueError, match="logged no evaluation/env_runners/success_rate"):
        build_report(client, ["alf"], tmp_path / "out", source="evaluation")
    client.create_experiment("empty")
    with pytest.raises(ValueError, match="has no runs"):
        build_report(client, ["empty"], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        main(["alf", "--tracking-uri", f"sqlite:///{tmp_path / 'missing.db'}"])
