"""GRPO on WebShop: Table 1, WebShop columns (Score, Succ.), row "GRPO".

Paper settings (docs/design.md §6): Qwen2.5-1.5B-Instruct, 16 tasks x 8 rollouts per
iteration, 150 iterations, the real catalogue (``--data-dir``), 15 steps, evaluation on
the test goals, responses of at most 512 tokens, alpha=4, beta=0.1, tau=0.1, gamma=0.95,
3 seeds (one Tune trial each, logged to MLflow).

Hardware and time: GPU cluster; the paper states neither. Qwen2.5-1.5B-Instruct should
fit one 80 GB GPU (not verified) with the learner and generation on it (``--num-gpus-per-learner 1
--num-gpus-per-env-runner 1``); for 7B (``--model Qwen/Qwen2.5-7B-Instruct``) use
several learners (``--num-learners N``, DDP). The wall time of 150 iterations was not
measured in this project.

CPU variant (``--cpu``): SmolLM2-135M (embedded), the generated WebShop catalogue (200
products), 2 tasks x 4 rollouts, 3 turns of 32 new tokens, 2 iterations; time per trial
not measured (an ALFWorld iteration of this size takes ~180 s on 2 cores,
``benchmarks/iteration.py``).

    python tuned_examples/grpo_webshop.py --cpu                       # CPU-sized, 3 seeds, Tune + MLflow
    python tuned_examples/grpo_webshop.py --cpu --no-tune --seeds 0   # one run, no Tune
    python tuned_examples/grpo_webshop.py --baselines shipped          # GRPO as verl-agent ships it (grpo_official)
    python tuned_examples/grpo_webshop.py --num-gpus-per-learner 1 --num-gpus-per-env-runner 1
    python -m rllib_proxmo.experiments.report grpo-webshop                      # table and learning curves
"""

from envs import WEBSHOP
from rllib_proxmo.experiments.tune_cli import Experiment, main

EXPERIMENT = Experiment(name="grpo-webshop", env=WEBSHOP, estimators=("grpo",), description=__doc__)

if __name__ == "__main__":
    main(EXPERIMENT)
