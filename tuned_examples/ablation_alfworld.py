"""Ablation of ProxMO on ALFWorld: Figure 4 (per task type success of ProxMO, w/o PSC, w/o PSA, GiGPO).

Paper settings (docs/design.md §6): Qwen2.5-1.5B-Instruct, 16 tasks x 8 rollouts per
iteration, 150 iterations, 50 steps, evaluation on the unseen split, alpha=4, beta=0.1,
tau=0.1. A Ray Tune grid of 4 estimators (``proxmo``, ``proxmo_no_psc``,
``proxmo_no_psa``, ``gigpo``) x 3 seeds = 12 trials, each logged to MLflow with an
``estimator`` tag; ``python -m rllib_proxmo.experiments.report proxmo-ablation-alfworld`` renders
the comparison.

Hardware and time: GPU cluster, one trial per GPU (``--num-gpus-per-learner 1
--num-gpus-per-env-runner 1 --max-concurrent-trials <GPUs>``); not timed in this project.

CPU variant (``--cpu``): SmolLM2-135M (embedded), 12 generated games, 2 tasks x 4
rollouts, 3 turns of 32 new tokens, 2 iterations: about 6 minutes per trial (~180 s per
iteration, ``benchmarks/iteration.py``), so 12 trials take over an hour on 2 cores;
``--seeds 0`` runs one seed.

    python tuned_examples/ablation_alfworld.py --cpu --seeds 0
"""

from envs import ALFWORLD
from rllib_proxmo.experiments.tune_cli import Experiment, main

EXPERIMENT = Experiment(
    name="proxmo-ablation-alfworld",
    env=ALFWORLD,
    estimators=("proxmo", "proxmo_no_psc", "proxmo_no_psa", "gigpo"),
    description=__doc__,
)

if __name__ == "__main__":
    main(EXPERIMENT)
