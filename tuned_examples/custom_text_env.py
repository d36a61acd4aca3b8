"""Bring your own text environment: a Gymnasium env that ProxMO trains an LLM on.

The user code is the ``DoorEnv`` class, its registration and :func:`door_config`
(30 lines). What ProxMO needs from an env:

- string observations and actions (:class:`envs.spaces.TextSpace` holds any string);
- ``reset(seed=..., options={"task_id": ...})``: every rollout of a task group is reset
  with the group's seed, the first one with ``options=None`` (the env picks a task from
  the seed) and the others with the ``task_id`` the first one reported, so a seed and a
  task id must give the same initial state;
- ``info`` keys: ``state`` (the raw observation text that PSA and GiGPO compare across
  rollouts), ``task_id``, ``task_type`` (metrics per task type), ``won`` (the success
  flag PSC counts); for the LLM wrappers also ``task`` (the task sentence of the prompt)
  and ``admissible_actions`` (the commands the agent may send);
- for the LLM wrappers, attributes ``noop_action`` (sent for a malformed output or a
  command that is not admissible, with a 0.1 penalty) and ``prompt_template``
  (``"alfworld"``, ``"webshop"`` or a format string).

``config.environment(id, env_config=...)`` takes a Gymnasium id (``env_config`` becomes
the env's keyword arguments), a name given to ``ray.tune.register_env`` or a callable
``env_config -> env`` (:mod:`rllib_proxmo.rollout.env_factory`). ``gym.register`` only
registers the id in the process that runs it: that is enough with the default local env
runner (``num_env_runners=0``); remote env runners need the env in an importable module
named in the id (``"my_package.my_envs:Door-v0"``, which imports the module first) or
``register_env``. The default ``llm_env_config={}`` wraps the env with
:func:`envs.llm_wrappers.make_llm_env` (prompt, ``<think>``/``<action>`` parsing, invalid
action penalty); ``llm_env_config=None`` hands the LLM's raw text to an env that renders
its own prompts.

Run (one iteration of 2 tasks x 4 rollouts with the embedded SmolLM2-135M, a few minutes
on a CPU)::

    python tuned_examples/custom_text_env.py
    python tuned_examples/custom_text_env.py --model /path/to/hf_model --iterations 5
"""

from __future__ import annotations

import argparse

import gymnasium as gym

from envs.spaces import TextSpace
from rllib_proxmo.algorithm.proxmo import ProxMOConfig

# ---------------------------------------------------------------------------------------- user code
COLOURS = ("red", "green", "blue")


class DoorEnv(gym.Env):
    """Open a door by pressing the button of the colour the task names; task k is colour k."""

    noop_action, prompt_template = "look", "alfworld"

    def __init__(self, max_steps: int = 3):
        self.observation_space, self.action_space, self.max_steps = TextSpace(), TextSpace(), max_steps

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.task_id = (options or {}).get("task_id", int(self.np_random.integers(len(COLOURS))))
        self.steps, self.won = 0, False
        return self._observe("You stand before a locked door with a red, a green and a blue button.")

    def step(self, action):
        self.steps += 1
        self.won = action == f"press {COLOURS[self.task_id]}"
        obs, info = self._observe("The door swings open." if self.won else "Nothing happens.")
        return obs, float(self.won), self.won, not self.won and self.steps >= self.max_steps, info

    def _observe(self, text):
        task, actions = f"open the door with the {COLOURS[self.task_id]} button", [f"press {c}" for c in COLOURS]
        info = {"state": text, "task_id": self.task_id, "task_type": "door", "won": self.won, "task": task}
        return text, {**info, "admissible_actions": ["look", *actions]}


if "Door-v0" not in gym.registry:
    gym.register("Door-v0", entry_point=DoorEnv)


def door_config(model: str) -> ProxMOConfig:
    return (
        ProxMOConfig()
        .environment("Door-v0", env_config={"max_steps": 3})
        .rl_module(model_config={"model_name_or_path": model, "max_new_tokens": 48})
        .training(group_size=4, tasks_per_iteration=2, llm_env_config={"require_think": False})
    )


# ---------------------------------------------------------------------------------------- end of user code


def main(argv: list[str] | None = None) -> list[dict]:
    """Train ``--iterations`` iterations; prints and returns each ``train()`` result's success rate."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="HF model directory or embedded alias")
    parser.add_argument("--iterations", type=int, default=1)
    args = parser.parse_args(argv)
    algo = door_config(args.model).build_algo()
    try:
        results = [algo.train() for _ in range(args.iterations)]
    finally:
        algo.stop()
    for iteration, result in enumerate(results, 1):
        print(f"iteration {iteration}: success rate {result['env_runners']['success_rate']:.2f}")
    return results


if __name__ == "__main__":
    main()
