"""Size of a ProxMO checkpoint relative to the fp32 model, after one iteration (AdamW state filled).

Trains one tiny iteration (``tests.text_env:TextGuess-v0``, one task x 2 rollouts, one
turn of 4 tokens) with one remote env runner, saves the algorithm and prints every file
over 100 kB and the ratio of the checkpoint to the model's unique fp32 parameters
(target: at most 3.2, i.e. the policy once plus AdamW's two moments).

    python -m benchmarks.checkpoint_size                          # SmolLM2-135M (about 2 minutes on 2 cores)
    python -m benchmarks.checkpoint_size --model path/to/model --output /tmp/ckpt
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rllib_proxmo.experiments.scale import CPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=CPU.model, help="model alias, directory or hub id")
    parser.add_argument("--output", type=Path, help="checkpoint directory (default: a temporary one)")
    args = parser.parse_args()

    import ray
    from ray.rllib.core import DEFAULT_MODULE_ID

    from rllib_proxmo.algorithm.proxmo import ProxMOConfig
    from rllib_proxmo.experiments.tracking import directory_size

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": os.getcwd()}})
    config = (
        ProxMOConfig()
        .environment("tests.text_env:TextGuess-v0", env_config={"code_length": 1})
        .rl_module(model_config={"model_name_or_path": args.model, "max_new_tokens": 4})
        .training(group_size=2, tasks_per_iteration=1, llm_env_config={"require_think": False}, max_turns=1)
        .env_runners(num_env_runners=1)
        .debugging(seed=7)
    )
    algo = config.build_algo()
    algo.train()
    output = args.output or Path(tempfile.mkdtemp(prefix="proxmo_checkpoint_"))
    start = time.perf_counter()
    checkpoint = Path(algo.save(str(output)).checkpoint.path)
    save_s = time.perf_counter() - start
    policy = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
    fp32 = sum(p.numel() * 4 for p in policy.model.parameters())
    algo.stop()
    ray.shutdown()
    for path in sorted(checkpoint.rglob("*")):
        if path.is_file() and path.stat().st_size > 100_000:
            print(f"{path.stat().st_size:>14,d}  {path.relative_to(checkpoint)}")
    total = directory_size(checkpoint)
    print(f"fp32 model {fp32:,d} bytes, checkpoint {total:,d} bytes ({checkpoint}), saved in {save_s:.1f} s")
    print(f"checkpoint / fp32 model = {total / fp32:.3f}")


if __name__ == "__main__":
    main()
