"""Learning-curve PNG of a training run (matplotlib, Agg canvas: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

#: (panel title, y label, [(curve label, key in a history row)]).
PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("Training rollouts", "rate", (("success rate", "success_rate"), ("format-valid rate", "format_valid_rate"))),
    ("Score", "mean episode return", (("score", "score_mean"),)),
    ("Throughput", "generated tokens / s", (("tokens/s", "generated_tokens_per_s"),)),
)


def plot_learning_curve(
    history: Sequence[Mapping[str, float]],
    path: str | Path,
    title: str,
    evaluation: Mapping[str, float] | None = None,
) -> Path:
    """Write a three-panel learning curve to ``path`` (PNG) and return the path.

    Args:
        history: One row per training iteration with ``iteration`` and the keys of
            :data:`PANELS` (rates in [0, 1], score, tokens per second).
        path: Output file; its parent directory is created.
        title: Figure title (e.g. estimator, env and model).
        evaluation: Final evaluation metrics (``success_rate``, ``score_mean``), drawn
            as markers after the last iteration.

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
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(PANELS))
    for ax, (panel, ylabel, curves) in zip(axes, PANELS):
        for label, key in curves:
            ax.plot(iterations, [row[key] for row in history], marker="o", label=label)
            if evaluation is not None and key in evaluation:
                ax.plot(
                    [iterations[-1]],
                    [evaluation[key]],
                    marker="*",
                    markersize=14,
                    linestyle="none",
                    label=f"{label} (evaluation)",
                )
        ax.set_title(panel)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(-0.05, 1.05)
    figure.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out
