"""Warm start: expert demonstrations -> fine-tuned policy -> a model directory an RL run starts from.

:func:`warm_start` plays the RL config's own env with an expert
(:mod:`rllib_proxmo.sft.demonstrations`), fine-tunes the RL config's own policy
module on it (:mod:`rllib_proxmo.sft.fine_tune`) and saves the policy as a Hugging
Face model directory (safetensors, tokenizer, ``warm_start.json`` with the settings
and per-epoch figures). ``model_name_or_path=<that directory>`` starts RL from it;
the frozen KL reference is then the warm-started policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_proxmo.algorithm.torch.model_loading import save_policy_model
from rllib_proxmo.rollout.env_factory import make_text_env
from rllib_proxmo.rollout.env_runner import TEXT_SPACE
from rllib_proxmo.sft.demonstrations import collect_demonstrations
from rllib_proxmo.sft.fine_tune import EpochStats, FineTuneSettings, fine_tune

SUMMARY_FILE = "warm_start.json"


@dataclass(frozen=True)
class WarmStartResult:
    """What :func:`warm_start` wrote and measured.

    Attributes:
        model_dir: The fine-tuned policy as a Hugging Face model directory.
        num_episodes, num_turns: Demonstrations collected.
        expert_success_rate: Share of demonstration episodes the expert won (detours included).
        epochs: Per-epoch loss and answer probability.
        seconds: Wall time of collection and fine-tuning.
    """

    model_dir: Path
    num_episodes: int
    num_turns: int
    expert_success_rate: float
    epochs: list[EpochStats]
    seconds: float


def warm_start(
    config: Any,
    output_dir: str | Path,
    *,
    num_episodes: int,
    settings: FineTuneSettings,
    detour_prob: float = 0.2,
    expert_env_config: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> WarmStartResult:
    """Fine-tune ``config``'s policy on ``num_episodes`` expert episodes of its env; save it to ``output_dir``.

    Args:
        config: The RL run's :class:`~rllib_proxmo.algorithm.proxmo.ProxMOConfig` (env,
            env config, LLM-env config, model config, ``task_ids``, ``max_turns``).
        output_dir: Directory of the saved model (created).
        num_episodes: Demonstration episodes, cycling over the training tasks.
        settings: Optimisation settings.
        detour_prob: Chance that a demonstration step executes a random action.
        expert_env_config: Env-config entries that switch the env's expert on
            (ALFWorld: ``{"expert": "search"}``), merged into ``config.env_config``.
        log: Receives the progress lines.
        on_epoch: Called with each epoch's figures (e.g. to track them).
    """
    import time

    start = time.perf_counter()
    expert_config = config.copy(copy_frozen=False)
    expert_config.env_config = {**dict(config.env_config or {}), **dict(expert_env_config or {})}
    env = make_text_env(expert_config, worker_index=0, index=0)
    spec = config.get_rl_module_spec(spaces={DEFAULT_MODULE_ID: (TEXT_SPACE, TEXT_SPACE)}, inference_only=False)
    policy = spec.build()
    task_ids = config.task_ids or getattr(env.unwrapped, "task_ids", None)
    try:
        episodes = collect_demonstrations(
            env,
            policy.tokenizer,
            num_episodes=num_episodes,
            task_ids=task_ids,
            detour_prob=detour_prob,
            seed=settings.seed,
            max_turns=config.max_turns,
        )
    finally:
        env.close()
    num_turns = sum(len(e.turns) for e in episodes)
    success = sum(e.won for e in episodes) / len(episodes)
    log(
        f"warm-up: {len(episodes)} expert episodes, {num_turns} turns (expert success {success:.2f}, "
        f"detour probability {detour_prob}) in {time.perf_counter() - start:.1f} s"
    )

    def report(stats: EpochStats) -> None:
        log(
            f"warm-up epoch {stats.epoch}/{settings.epochs} | loss {stats.loss:.3f} | "
            f"expert-answer prob {stats.answer_prob:.2f} | {stats.num_input_tokens / stats.seconds:.0f} tokens/s | "
            f"{stats.seconds:.1f} s"
        )
        if on_epoch is not None:
            on_epoch(stats)

    history = fine_tune(policy, episodes, settings, on_epoch=report)
    model_dir = Path(output_dir)
    save_policy_model(policy, model_dir)
    result = WarmStartResult(model_dir, len(episodes), num_turns, success, history, time.perf_counter() - start)
    summary = {
        "base_model": config.model_config["model_name_or_path"],
        "settings": asdict(settings),
        "detour_prob": detour_prob,
        "num_episodes": result.num_episodes,
        "num_turns": result.num_turns,
        "expert_success_rate": result.expert_success_rate,
        "epochs": [asdict(stats) for stats in history],
        "seconds": result.seconds,
    }
    (model_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return result
