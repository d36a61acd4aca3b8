"""Hyperparameter sensitivity of ProxMO on ALFWorld: Figure 3 (alpha, beta, tau).

One sweep per invocation (``--sweep alpha|beta|tau``): the chosen hyperparameter takes
every value of its grid while the others stay at the paper's optimum (alpha=4, beta=0.1,
tau=0.1), each with 3 seeds, as one Ray Tune grid logged to MLflow (experiment
``proxmo-sensitivity-<sweep>-alfworld``, the swept value as a tag). The grids are this
project's choice around the optimum (the figure's exact axis values are not in the
paper's text): alpha in {1, 2, 4, 8, 16}, beta in {0.025, 0.05, 0.1, 0.2, 0.4}, tau in
{0.01, 0.03, 0.1, 0.3, 1} (log-spaced, as the figure plots tau on a log scale).
Other settings as in ``proxmo_alfworld.py`` (Qwen2.5-1.5B-Instruct, 16 x 8, 150
iterations, 50 steps).

Hardware and time: GPU cluster, 15 trials per sweep, one per GPU
(``--max-concurrent-trials``); not timed in this project.

CPU variant (``--cpu``): SmolLM2-135M, 12 generated games, 2 tasks x 4 rollouts, 3 turns,
2 iterations: about 6 minutes per trial (~180 s per iteration, ``benchmarks/iteration.py``).

    python tuned_examples/sensitivity_alfworld.py --sweep tau --cpu --seeds 0
    python -m rllib_proxmo.experiments.report proxmo-sensitivity-tau-alfworld --group-by tau
"""

import argparse

from envs import ALFWORLD
from rllib_proxmo.experiments.tune_cli import Experiment, main

GRIDS = {
    "alpha": (1.0, 2.0, 4.0, 8.0, 16.0),
    "beta": (0.025, 0.05, 0.1, 0.2, 0.4),
    "tau": (0.01, 0.03, 0.1, 0.3, 1.0),
}


def experiment(sweep: str) -> Experiment:
    """The Figure 3 sweep of one hyperparameter."""
    if sweep not in GRIDS:
        raise ValueError(f"sweep must be one of {sorted(GRIDS)}, got {sweep!r}")
    return Experiment(
        name=f"proxmo-sensitivity-{sweep}-alfworld",
        env=ALFWORLD,
        estimators=("proxmo",),
        grid={sweep: GRIDS[sweep]},
        description=__doc__,
    )


#: The script's own flag, added to the experiment's parser (so ``--help`` lists it).
SWEEP_PARSER = argparse.ArgumentParser(add_help=False)
SWEEP_PARSER.add_argument("--sweep", choices=sorted(GRIDS), required=True, help="the hyperparameter to sweep")


def chosen_sweep(argv: list[str] | None = None) -> str | None:
    """The ``--sweep`` value of the command line, None when it is missing or invalid."""
    lenient = argparse.ArgumentParser(add_help=False)
    lenient.add_argument("--sweep")
    sweep = lenient.parse_known_args(argv)[0].sweep
    return sweep if sweep in GRIDS else None


if __name__ == "__main__":
    # Without a valid --sweep the full parser prints --help (exit 0) or refuses the command line (exit 2)
    # before the placeholder experiment could run.
    main(experiment(chosen_sweep() or sorted(GRIDS)[0]), parents=[SWEEP_PARSER])
