"""The report CLI on a real MLflow SQLite store written here with the jobs' RunTracker.

The runs are recorded the way the main job and every Tune trial record theirs
(:meth:`RunTracker.log_result` of RLlib-shaped results: ``env_runners/success_rate/<type>``,
``evaluation/env_runners/...`` at step ``training_iteration``; tags ``estimator``, ``env``,
``seed``), with known values, so every table cell can be checked exactly.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from rllib_proxmo.experiments.plots import plot_success_bands
from rllib_proxmo.experiments.report import build_report, estimator_forms, main
from rllib_proxmo.experiments.tracking import RunTracker

#: (estimator, seed) -> success rate per iteration (1, 2, 3) and per task type at the end.
ALFWORLD_RUNS = {
    ("proxmo", 0): ([0.1, 0.5, 0.4], {"pick": 0.5, "look": 0.25}),
    ("proxmo", 1): ([0.2, 0.3, 0.6], {"pick": 1.0, "look": 0.75}),
    ("grpo", 0): ([0.0, 0.1, 0.2], {"pick": 0.25}),
}


def _log_run(uri: str, experiment: str, tags: dict[str, str], results: list[dict]) -> str:
    """One run of training results (iterations 1, 2, ...), recorded as the jobs record theirs."""
    tracker = RunTracker(uri, experiment, f"{tags['estimator']}-{tags['seed']}", tags)
    tracker.log_params({"estimator": tags["estimator"]})
    for iteration, result in enumerate(results, start=1):
        tracker.log_result({"training_iteration": iteration, **result})
    tracker.finish()
    return tracker.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module (creating an MLflow SQLite schema takes seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"
    run_ids = {}
    for (estimator, seed), (curve, by_type) in ALFWORLD_RUNS.items():
        results = [{"env_runners": {"success_rate": value}} for value in curve]
        results[-1]["env_runners"].update({f"success_rate/{task}": value for task, value in by_type.items()})
        tags = {"estimator": estimator, "seed": str(seed), "env": "ALFWorld-v0"}
        run_ids[(estimator, seed)] = _log_run(uri, "alf", tags, results)
    for seed, (score, success) in enumerate([(0.6, 0.3), (0.8, 0.5)]):
        results = [
            {"env_runners": {"success_rate": 0.1, "score_mean": 0.2}},
            {
                "env_runners": {"success_rate": 0.2, "score_mean": 0.3},
                "evaluation": {"env_runners": {"success_rate": success, "score_mean": score}},
            },
        ]
        _log_run(uri, "shop", {"estimator": "gigpo", "seed": str(seed), "env": "WebShop-v0"}, results)
    return uri, MlflowClient(tracking_uri=uri), run_ids


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


def test_figures_leave_no_pyplot_state(tmp_path):
    """The report and the learning curves draw on Agg canvases: pyplot is never imported."""
    code = (
        "import sys\n"
        "from rllib_proxmo.experiments import report, tracking, plots\n"
        "plots.plot_success_bands({'a': [[(1, 0.5), (2, 1.0)]]}, sys.argv[1] + '/bands.png', 't')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True, text=True)


def test_success_bands_refuse_an_empty_plot(tmp_path):
    with pytest.raises(ValueError, match="at least one group"):
        plot_success_bands({}, tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="group 'a' has no success-rate point"):
        plot_success_bands({"a": [[]]}, tmp_path / "x.png", "t")


def test_estimator_forms_label_paper_equations_and_shipped_code():
    assert estimator_forms(["gigpo_official", "grpo", "grpo", "tau=0.1"]) == (
        "Estimators: gigpo_official: as its authors ship it; grpo: paper equations."
    )
    assert estimator_forms(["0.1", "0.5"]) == ""
