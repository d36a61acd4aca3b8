"""Paper-style results table and learning curves from MLflow runs.

    python -m rllib_proxmo.experiments.report proxmo-alfworld grpo-alfworld gigpo-alfworld
    python -m rllib_proxmo.experiments.report <run id> <run id> --tracking-uri sqlite:////abs/mlruns/mlflow.db
    python -m rllib_proxmo.experiments.report proxmo-sensitivity-tau-alfworld --group-by tau

Each positional argument is an MLflow experiment name or a run id: runs of the main
job and Tune trials alike, both recorded by :mod:`rllib_proxmo.experiments.tracking`
(metrics at step ``training_iteration``). Runs are grouped by ``--group-by`` (a tag,
else a parameter; default ``estimator``) and split by their ``env`` tag. For every group the
table gives mean ± sample standard deviation over its runs (seeds) of the final (or,
with ``--reduce best``, the best) value of:

- ALFWorld: success rate per task type (Pick, Look, Clean, Heat, Cool, Pick2) and All;
- WebShop: Score (100 x mean episode return) and Succ.

in percent, like Table 1 of the paper. Grouped by estimator, each table ends with the form
of each row's estimator: the paper's equations (``grpo``, ``gigpo``, ``proxmo``, ablations)
or as its authors' code ships it (``grpo_official``, ``gigpo_official``, ``proxmo_official``;
``--baselines shipped`` of the tuned examples). Metrics are the evaluation ones
(``evaluation/env_runners/...``, the unseen split) when a run has them, else the
training ones (``env_runners/...``); ``--source`` forces either. Learning curves
(success rate against training iteration, one line per group, the band ± one
standard deviation over seeds) are written as one PNG per environment to
``--output-dir``, next to ``report.md`` (the tables, also printed).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rllib_proxmo.advantages import ESTIMATORS, SHIPPED_VERSION
from rllib_proxmo.experiments.plots import Curve, plot_success_bands
from rllib_proxmo.experiments.tracking import default_tracking_uri

TRAINING_PREFIX = "env_runners/"
EVALUATION_PREFIX = "evaluation/env_runners/"
SUCCESS = "success_rate"
SCORE = "score_mean"
#: ALFWorld task types in Table 1's column order, with their column titles.
ALFWORLD_TASK_TYPES = {
    "pick": "Pick",
    "look": "Look",
    "clean": "Clean",
    "heat": "Heat",
    "cool": "Cool",
    "pick2": "Pick2",
}
WEBSHOP_ENV = "WebShop-v0"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class RunSummary:
    """What the report needs of one MLflow run.

    Attributes:
        run_id: MLflow run id.
        env: The run's ``env`` tag ("unknown" when missing).
        group: Its value of the ``--group-by`` tag or parameter.
        prefix: Metric prefix used (evaluation or training).
        values: Reduced (final or best) value per metric name (prefix removed).
        curve: (iteration, success rate) pairs in iteration order.
    """

    run_id: str
    env: str
    group: str
    prefix: str
    values: dict[str, float] = field(default_factory=dict)
    curve: Curve = field(default_factory=list)


def resolve_runs(client: MlflowClient, targets: Sequence[str]) -> list[Run]:
    """The runs named by experiment names or run ids, in argument order.

    Raises:
        ValueError: for a target that is neither an experiment name nor a run id of
            the store, or an experiment without runs.
    """
    runs: list[Run] = []
    for target in targets:
        experiment = client.get_experiment_by_name(target)
        if experiment is not None:
            found = client.search_runs([experiment.experiment_id], max_results=50_000)
            if not found:
                raise ValueError(f"MLflow experiment {target!r} has no runs")
            runs.extend(found)
            continue
        if RUN_ID.match(target):
            try:
                runs.append(client.get_run(target))
                continue
            except MlflowException as error:
                raise ValueError(f"no MLflow run with id {target!r}: {error}") from error
        raise ValueError(f"{target!r} is neither an MLflow experiment name nor a run id in this store")
    return runs


def group_of(run: Run, group_by: str) -> str:
    """The run's ``group_by`` tag, else parameter.

    Raises:
        ValueError: when the run has neither.
    """
    value = run.data.tags.get(group_by, run.data.params.get(group_by))
    if value is None:
        raise ValueError(f"run {run.info.run_id} has no tag or parameter {group_by!r} to group by")
    return value


def metric_prefix(run: Run, source: str) -> str:
    """Evaluation metrics when asked for or (``auto``) present, else training ones."""
    has_evaluation = f"{EVALUATION_PREFIX}{SUCCESS}" in run.data.metrics
    if source == "evaluation" and not has_evaluation:
        raise ValueError(f"run {run.info.run_id} logged no {EVALUATION_PREFIX}{SUCCESS}")
    if source == "evaluation" or (source == "auto" and has_evaluation):
        return EVALUATION_PREFIX
    return TRAINING_PREFIX


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """(training iteration, value) pairs of a metric, in iteration order (the step is the iteration)."""
    return sorted((int(metric.step), float(metric.value)) for metric in client.get_metric_history(run_id, key))


def summarize(client: MlflowClient, run: Run, *, group_by: str, source: str, reduce: str) -> RunSummary:
    """Reduce a run's success / score metrics (final or best value) and its curve."""
    prefix = metric_prefix(run, source)
    summary = RunSummary(
        run_id=run.info.run_id, env=run.data.tags.get("env", "unknown"), group=group_of(run, group_by), prefix=prefix
    )
    for key in run.data.metrics:
        if not key.startswith(prefix):
            continue
        name = key.removeprefix(prefix)
        if name != SCORE and name != SUCCESS and not name.startswith(f"{SUCCESS}/"):
            continue
        points = history(client, run.info.run_id, key)
        values = [value for _, value in points]
        summary.values[name] = max(values) if reduce == "best" else values[-1]
        if name == SUCCESS:
            summary.curve = points
    if SUCCESS not in summary.values:
        raise ValueError(f"run {run.info.run_id} logged no {prefix}{SUCCESS}; is it a ProxMO run?")
    return summary


def table_columns(env: str, summaries: Iterable[RunSummary]) -> list[tuple[str, str, float]]:
    """(title, metric name, scale) of the table columns for one environment."""
    if env == WEBSHOP_ENV:
        return [("Score", SCORE, 100.0), ("Succ.", SUCCESS, 100.0)]
    present = {name for summary in summaries for name in summary.values}
    known = [
        (title, f"{SUCCESS}/{task}", 100.0)
        for task, title in ALFWORLD_TASK_TYPES.items()
        if f"{SUCCESS}/{task}" in present
    ]
    other = sorted(name for name in present if name.startswith(f"{SUCCESS}/") and name not in {c[1] for c in known})
    return [*known, *((name.split("/", 1)[1], name, 100.0) for name in other), ("All", SUCCESS, 100.0)]


def mean_std_cell(values: Sequence[float]) -> str:
    """``mean ± std`` (sample std over runs); only the mean for one run; ``–`` for none."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def markdown_table(env: str, summaries: Sequence[RunSummary], group_by: str) -> str:
    """One environment's table: a row per group (in first-seen order), ``n`` = runs.

    A cell that fewer runs of the group logged (a task type some seeds never drew)
    says how many it averages.
    """
    columns = table_columns(env, summaries)
    groups: dict[str, list[RunSummary]] = defaultdict(list)
    for summary in summaries:
        groups[summary.group].append(summary)
    sources = sorted({"evaluation" if s.prefix == EVALUATION_PREFIX else "training" for s in summaries})
    lines = [
        f"### {env} ({' + '.join(sources)} episodes, %)",
        "",
        "| " + " | ".join([group_by, "n", *(title for title, _, _ in columns)]) + " |",
        "|" + "---|" * (len(columns) + 2),
    ]
    for group, members in groups.items():
        cells = []
        for _, name, scale in columns:
            values = [scale * m.values[name] for m in members if name in m.values]
            partial = f" (n={len(values)})" if 0 < len(values) < len(members) else ""
            cells.append(mean_std_cell(values) + partial)
        lines.append("| " + " | ".join([group, str(len(members)), *cells]) + " |")
    return "\n".join(lines)


def estimator_forms(groups: Iterable[str]) -> str:
    """One line naming, for each estimator among ``groups``, whether it is the paper's equations or as shipped."""
    shipped = set(SHIPPED_VERSION.values())
    forms = [
        f"{group}: {'as its authors ship it' if group in shipped else 'paper equations'}"
        for group in sorted(set(groups))
        if group in ESTIMATORS
    ]
    return f"Estimators: {'; '.join(forms)}." if forms else ""


def plot_learning_curves(env: str, summaries: Sequence[RunSummary], group_by: str, path: Path) -> Path:
    """Success rate (%) against iteration, a line per group and a ± std band over its runs."""
    groups: dict[str, list[Curve]] = defaultdict(list)
    for summary in summaries:
        groups[summary.group].append(summary.curve)
    return plot_success_bands(groups, path, f"{env}: success rate by {group_by}")


def build_report(
    client: MlflowClient,
    targets: Sequence[str],
    output_dir: Path,
    *,
    group_by: str = "estimator",
    source: str = "auto",
    reduce: str = "last",
) -> tuple[str, list[Path]]:
    """Markdown tables and learning-curve PNGs of the runs named by ``targets``.

    Returns the Markdown text (also written to ``output_dir/report.md``) and the
    PNG paths (``learning_curves_<env>.png``).
    """
    summaries = [
        summarize(client, run, group_by=group_by, source=source, reduce=reduce) for run in resolve_runs(client, targets)
    ]
    by_env: dict[str, list[RunSummary]] = defaultdict(list)
    for summary in summaries:
        by_env[summary.env].append(summary)
    output_dir.mkdir(parents=True, exist_ok=True)
    tables, images = [], []
    for env, members in by_env.items():
        tables.append(markdown_table(env, members, group_by))
        forms = estimator_forms(summary.group for summary in members) if group_by == "estimator" else ""
        if forms:
            tables.append(forms)
        image = output_dir / f"learning_curves_{re.sub(r'[^A-Za-z0-9_.-]', '_', env)}.png"
        plot_learning_curves(env, members, group_by, image)
        images.append(image)
    text = "\n\n".join(tables) + "\n"
    (output_dir / "report.md").write_text(text, encoding="utf-8")
    return text, images


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rllib_proxmo.experiments.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("targets", nargs="+", help="MLflow experiment names or run ids")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db, where the jobs write)",
    )
    parser.add_argument("--group-by", default="estimator", help="tag or parameter that names a table row")
    parser.add_argument("--source", choices=("auto", "evaluation", "training"), default="auto")
    parser.add_argument("--reduce", choices=("last", "best"), default="last", help="value of a run's metric")
    parser.add_argument("--output-dir", type=Path, default=Path("proxmo_report"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise FileNotFoundError(f"no MLflow store at {uri}")
    client = MlflowClient(tracking_uri=uri)
    text, images = build_report(
        client, args.targets, args.output_dir, group_by=args.group_by, source=args.source, reduce=args.reduce
    )
    print(text)
    for image in images:
        print(f"learning curves: {image}")


if __name__ == "__main__":
    main()
