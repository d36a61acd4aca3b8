"""ProxMO on ALFWorld with Qwen2.5-7B-Instruct: Table 1, ALFWorld columns, the 7B row "ProxMO (Ours)".

Paper settings as ``proxmo_alfworld.py`` (docs/design.md §6: 16 tasks x 8 rollouts per
iteration, 150 iterations, paper data, 50 steps, unseen split, responses of at most 512
tokens, alpha=4, beta=0.1, tau=0.1, gamma=0.95, 3 seeds), with full fine-tuning of the 7B
model, which needs sharded learners: 18 bytes per parameter with DDP (137 GB per GPU) do
not fit an 80 GB GPU.

Hardware and time: 8 x 80 GB GPUs (not run in this project; the paper states neither).
The defaults at paper scale (``Experiment.paper_defaults``, each overridable) follow the
recommendation of docs/design.md §4.9: 4 learners with ``--sharding fsdp`` (FSDP2: 34 GB
of sharded weights, gradients and AdamW state per GPU, plus about 8 GB transient and 15 GB
of activations at ``--micro-batch-size 2``), one GPU each, and 4 env runners on the other
4 GPUs; add ``--engine vllm`` for vLLM sampling (pip install 'rllib-proxmo[vllm]').

CPU variant (``--cpu``): SmolLM2-135M on generated games with the CPU defaults of the other
examples (DDP); ``--cpu --num-learners 2 --sharding fsdp --num-gpus-per-learner 0`` runs the
sharded path on two CPU learners over gloo (slow on 2 cores: every learner runs the whole
model).

    python tuned_examples/proxmo_alfworld_7b.py --engine vllm --num-gpus-per-env-runner 1
    python tuned_examples/proxmo_alfworld_7b.py --num-learners 8 --num-env-runners 8   # 16 GPUs
    python -m rllib_proxmo.experiments.report proxmo-alfworld-7b
"""

from envs import ALFWORLD
from rllib_proxmo.experiments.tune_cli import Experiment, main

EXPERIMENT = Experiment(
    name="proxmo-alfworld-7b",
    env=ALFWORLD,
    estimators=("proxmo",),
    paper_defaults={
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "num_learners": 4,
        "num_gpus_per_learner": 1,
        "sharding": "fsdp",
        "num_env_runners": 4,
        "micro_batch_size": 2,
    },
    description=__doc__,
)

if __name__ == "__main__":
    main(EXPERIMENT)
