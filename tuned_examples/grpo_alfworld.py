"""GRPO on ALFWorld: Table 1, ALFWorld columns, row "GRPO".

Paper settings (docs/design.md §6): Qwen2.5-1.5B-Instruct, 16 tasks x 8 rollouts per
iteration, 150 iterations, paper data, 50 steps, evaluation on the unseen split,
responses of at most 512 tokens, alpha=4, beta=0.1, tau=0.1, gamma=0.95, 3 seeds (one
Tune trial each, logged to MLflow).

Hardware and time: GPU cluster; the paper states neither. Qwen2.5-1.5B-Instruct should
fit one 80 GB GPU (not verified) with the learner and generation on it (``--num-gpus-per-learner 1
--num-gpus-per-env-runner 1``); for 7B (``--model Qwen/Qwen2.5-7B-Instruct``) use
several learners (``--num-learners N``, DDP). The wall time of 150 iterations was not
measured in this project.

CPU variant (``--cpu``): SmolLM2-135M (embedded), generated ALFWorld games (12), 2 tasks
x 4 rollouts, 3 turns of 32 new tokens, 2 iterations; about 6 minutes per trial on 2
cores (ALFWorld: ~180 s per iteration measured by ``benchmarks/iteration.py``).

    python tuned_examples/grpo_alfworld.py --cpu                       # CPU-sized, 3 seeds, Tune + MLflow
    python tuned_examples/grpo_alfworld.py --cpu --no-tune --seeds 0   # one run, no Tune
    python tuned_examples/grpo_alfworld.py --baselines shipped          # GRPO as verl-agent ships it (grpo_official)
    python tuned_examples/grpo_alfworld.py --num-gpus-per-learner 1 --num-gpus-per-env-runner 1
    python -m rllib_proxmo.experiments.report grpo-alfworld                      # table and learning curves
"""

from envs import ALFWORLD
from rllib_proxmo.experiments.tune_cli import Experiment, main

EXPERIMENT = Experiment(name="grpo-alfworld", env=ALFWORLD, estimators=("grpo",), description=__doc__)

if __name__ == "__main__":
    main(EXPERIMENT)
