"""Every figure of the project, in one style: matplotlib ``Figure`` on an Agg canvas.

No ``pyplot``: no global figure state, no display, nothing left open, so figures can
be drawn from any thread or Ray actor. Two figures:

- :func:`plot_learning_curve`: one run, three panels, with the held-out evaluations
  as a line and a Wilson band (the main job's and every Tune trial's ``learning_curve.png``);
- :func:`plot_success_bands`: success rate of groups of runs, mean ± one standard
  deviation over seeds (the report's ``learning_curves_<env>.png``), with their held-out
  success in a second panel where given (``benchmarks/learning_llm.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rllib_proxmo.experiments.tables import EVAL_HIGH, EVAL_LOW, EVAL_SUCCESS, held_out_figures, held_out_points

#: Width and height in inches of one panel, and the resolution of the PNG files.
PANEL_SIZE = (4.5, 3.6)
DPI = 120
#: Curves with fewer points than this get a marker on every point.
MARKER_LIMIT = 20

#: (panel title, y label, [(curve label, key in a history row)]) of :func:`plot_learning_curve`.
PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("Training rollouts", "rate", (("success rate", "success_rate"), ("format-valid rate", "format_valid_rate"))),
    ("Score", "mean episode return", (("score", "score_mean"),)),
    ("Throughput", "generated tokens / s", (("tokens/s", "generated_tokens_per_s"),)),
)

#: The key of :data:`PANELS` whose held-out evaluations :func:`plot_learning_curve` draws as a line with a band.
HELD_OUT_KEY = "success_rate"

#: One learning curve: (training iteration, value) pairs in iteration order.
Curve = Sequence[tuple[int, float]]


def _figure(panels: int, title: str) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(PANEL_SIZE[0] * panels, PANEL_SIZE[1]), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    figure.suptitle(title)
    return figure, list(axes)


def _finish_axes(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("training iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _marker(points: int) -> str | None:
    return "o" if points < MARKER_LIMIT else None


def _save(figure: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=DPI)
    return out


def plot_learning_curve(
    history: Sequence[Mapping[str, float]],
    path: str | Path,
    title: str,
    evaluation: Mapping[str, float] | None = None,
    start_evaluation: Mapping[str, float] | None = None,
    *,
    start_label: str = "start",
    split: str = "held-out",
) -> Path:
    """Write a three-panel learning curve to ``path`` (PNG) and return the path.

    The success panel shows the training rollouts' success per iteration and the held-out
    success of every evaluation as points joined by a line, with its 95 % Wilson interval
    as a shaded band: the starting policy's at iteration 0 (a diamond) and the evaluated
    iterations' (rows with :data:`~rllib_proxmo.experiments.tables.EVAL_SUCCESS`).

    Args:
        history: One row per training iteration with ``iteration`` and the keys of
            :data:`PANELS` (rates in [0, 1], score, tokens per second), and the held-out
            figures on evaluated iterations, as
            :func:`rllib_proxmo.experiments.tables.history_row` gives.
        path: Output file; its parent directory is created.
        title: Figure title (e.g. estimator, env and model).
        evaluation: Final evaluation metrics (``format_valid_rate``, ``score_mean``),
            drawn as stars after the last iteration; its success is the last row's
            held-out figures.
        start_evaluation: The same evaluation of the starting policy (after a warm
            start): the held-out line's first point and diamonds at iteration 0, with a
            dashed line where RL begins.
        start_label: Legend name of the starting policy and of the line.
        split: Legend name of the evaluation's split (e.g. ``"unseen"``).

    Raises:
        ValueError: when ``history`` is empty or a row lacks a plotted key.
    """
    if not history:
        raise ValueError("plot_learning_curve needs at least one iteration in history")
    needed = {"iteration"} | {key for _, _, curves in PANELS for _, key in curves}
    for row in history:
        missing = needed - set(row)
        if missing:
            raise ValueError(f"history row {dict(row)} lacks {sorted(missing)}")
    iterations = [row["iteration"] for row in history]
    figure, axes = _figure(len(PANELS), title)
    for ax, (panel, ylabel, curves) in zip(axes, PANELS):
        for label, key in curves:
            ax.plot(iterations, [row[key] for row in history], marker=_marker(len(history)), label=label)
            if key == HELD_OUT_KEY:
                points = held_out_points(history, held_out_figures(start_evaluation or {}))
                _plot_held_out(ax, points, f"{split} {label}", start_label)
                continue
            if start_evaluation is not None and key in start_evaluation:
                ax.plot(
                    [0],
                    [start_evaluation[key]],
                    marker="D",
                    markersize=9,
                    linestyle="none",
                    label=f"{label} ({start_label}, evaluation)",
                )
            if evaluation is not None and key in evaluation:
                ax.plot(
                    [iterations[-1]],
                    [evaluation[key]],
                    marker="*",
                    markersize=14,
                    linestyle="none",
                    label=f"{label} (evaluation)",
                )
        if start_evaluation is not None:
            ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, label=f"RL starts ({start_label} ended)")
        _finish_axes(ax, panel, ylabel)
    axes[0].set_ylim(-0.05, 1.05)
    return _save(figure, path)


def _plot_held_out(ax: Axes, points: Sequence[tuple[int, Mapping[str, float]]], label: str, start_label: str) -> None:
    """The held-out success ``points`` joined by a line over their Wilson band; the starting policy's, at
    iteration 0, also as a diamond named ``start_label``."""
    if not points:
        return
    iterations = [iteration for iteration, _ in points]
    (line,) = ax.plot(iterations, [p[EVAL_SUCCESS] for _, p in points], marker="o", label=f"{label} (evaluation)")
    ax.fill_between(
        iterations,
        [p[EVAL_LOW] for _, p in points],
        [p[EVAL_HIGH] for _, p in points],
        color=line.get_color(),
        alpha=0.2,
        label=f"{label}, 95 % Wilson interval",
    )
    if iterations[0] == 0:
        ax.plot(
            [0],
            [points[0][1][EVAL_SUCCESS]],
            marker="D",
            markersize=9,
            linestyle="none",
            color=line.get_color(),
            label=f"{label} ({start_label})",
        )


def curve_band(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterations (I,), mean (I,) and sample std (I,; 0 for one run) over the runs that reached each iteration."""
    by_iteration: dict[int, list[float]] = defaultdict(list)
    for curve in curves:
        for iteration, value in curve:
            by_iteration[iteration].append(value)
    iterations = np.array(sorted(by_iteration))
    mean = np.array([np.mean(by_iteration[i]) for i in iterations])
    std = np.array([np.std(by_iteration[i], ddof=1) if len(by_iteration[i]) > 1 else 0.0 for i in iterations])
    return iterations, mean, std


def plot_success_bands(
    groups: Mapping[str, Sequence[Curve]],
    path: str | Path,
    title: str,
    held_out: Mapping[str, Sequence[Curve]] | None = None,
    *,
    split: str = "held-out",
) -> Path:
    """Success rate (%) against iteration: a line per group, the band ± one std over its runs.

    Args:
        groups: Group label -> the success-rate curves (rates in [0, 1]) of its runs.
        path: Output PNG; its parent directory is created.
        title: Figure title.
        held_out: Group label -> the held-out success curves of its runs (e.g. the evaluated
            iterations, the starting policy's at 0); when not empty, ``groups`` are the training
            rollouts' panel and these a second one, a label in the same colour in both.
        split: The held-out panel's name of the evaluation's split (e.g. ``"unseen"``).

    Raises:
        ValueError: when there is no group or a group has no point.
    """
    if not groups:
        raise ValueError("plot_success_bands needs at least one group of runs")
    panels = {"success rate": groups} if not held_out else {"training rollouts": groups, f"{split} split": held_out}
    colours = {label: f"C{index}" for index, label in enumerate(dict.fromkeys([*groups, *(held_out or {})]))}
    figure, axes = _figure(len(panels), title)
    for ax, (panel, bands) in zip(axes, panels.items()):
        for label, curves in bands.items():
            iterations, mean, std = curve_band(curves)
            if not len(iterations):
                raise ValueError(f"group {label!r} has no success-rate point")
            ax.plot(
                iterations,
                100 * mean,
                marker=_marker(len(iterations)),
                color=colours[label],
                label=f"{label} (n={len(curves)})",
            )
            ax.fill_between(iterations, 100 * (mean - std), 100 * (mean + std), color=colours[label], alpha=0.2)
        ax.set_ylim(-2, 102)
        _finish_axes(ax, panel, "success rate (%)")
    return _save(figure, path)
