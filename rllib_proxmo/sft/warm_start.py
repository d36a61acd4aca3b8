"""Warm start: expert demonstrations -> fine-tuned policy -> a model directory an RL run starts from.

:func:`warm_start` plays the RL config's own env with an expert
(:mod:`rllib_proxmo.sft.demonstrations`), fine-tunes the RL config's own policy
module on it (:mod:`rllib_proxmo.sft.fine_tune`), optionally adds rounds of on-policy
relabelling (:mod:`rllib_proxmo.sft.dagger`: the policy plays, the expert labels the states
it reached, the policy is fine-tuned again on all turns so far, the earlier turns from their
kept trunk outputs) and saves the policy as a Hugging
Face model directory (safetensors, tokenizer, ``warm_start.json`` with the settings
and per-epoch figures). ``model_name_or_path=<that directory>`` starts RL from it;
the frozen KL reference is then the warm-started policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_proxmo.algorithm.torch.model_loading import save_policy_model
from rllib_proxmo.rollout.env_factory import make_text_env
from rllib_proxmo.rollout.env_runner import TEXT_SPACE, SamplerSettings
from rllib_proxmo.sft.dagger import play_policy, relabel
from rllib_proxmo.sft.demonstrations import collect_demonstrations
from rllib_proxmo.sft.fine_tune import DemonstrationBatches, EpochStats, FineTuneSettings, fine_tune

SUMMARY_FILE = "warm_start.json"


@dataclass(frozen=True)
class WarmStartResult:
    """What :func:`warm_start` wrote and measured.

    Attributes:
        model_dir: The fine-tuned policy as a Hugging Face model directory.
        num_episodes, num_turns: Demonstrations collected (the expert's and the relabelled ones).
        expert_success_rate: Share of the expert's demonstration episodes it won (detours included).
        policy_success_rates: Per relabelling round, the share of its episodes the policy won.
        epochs: Per-epoch loss and answer probability, over all fine-tuning passes.
        seconds: Wall time of collection and fine-tuning.
    """

    model_dir: Path
    num_episodes: int
    num_turns: int
    expert_success_rate: float
    policy_success_rates: list[float]
    epochs: list[EpochStats]
    seconds: float


def check_framing(model: str | Path, system_prompt: str | None) -> None:
    """Refuse to continue from a warm start tuned with another system message than ``system_prompt``.

    ``model`` is a warm start when it holds :data:`SUMMARY_FILE`; its demonstrations were sent with
    the system message recorded there (none recorded: the chat template's default, as every warm
    start saved before the setting existed). Anything else (a base model, a hub id) passes.

    Raises:
        ValueError: for a warm start whose recorded system message differs, naming both.
    """
    summary = Path(model) / SUMMARY_FILE
    if not summary.is_file():
        return
    tuned = json.loads(summary.read_text()).get("system_prompt")
    if tuned != system_prompt:
        shown = "the chat template's default" if tuned is None else repr(tuned)
        raise ValueError(
            f"model {model}: its warm start was tuned with the system message {shown} ({SUMMARY_FILE}), "
            f"this run sends model_config system_prompt={system_prompt!r}; warm-start again with this run's "
            "settings (python -m rllib_proxmo.sft --output <dir>) so that RL samples the prompts it learnt"
        )


def warm_start(
    config: Any,
    output_dir: str | Path,
    *,
    num_episodes: int,
    settings: FineTuneSettings,
    detour_prob: float = 0.2,
    demonstration_max_turns: int | None = None,
    relabel_rounds: int = 0,
    relabel_episodes: int | None = None,
    relabel_epochs: int | None = None,
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
        demonstration_max_turns: Turn limit of an expert demonstration (None: ``config.max_turns``,
            the RL episodes' limit). A higher limit lets every demonstration reach the end of its
            task, where RL episodes of the expert's length would be cut off before it.
        relabel_rounds: Rounds of on-policy relabelling after the first fine-tuning, each
            followed by ``relabel_epochs`` more passes over every turn collected so far.
        relabel_episodes: Episodes the policy plays per round (None: ``num_episodes``).
        relabel_epochs: Passes after each round (None: ``settings.epochs``).
        expert_env_config: Env-config entries that switch the env's expert on
            (ALFWorld: ``{"expert": "search"}``), merged into ``config.env_config``.
        log: Receives the progress lines.
        on_epoch: Called with each epoch's figures (e.g. to track them).

    Raises:
        ValueError: for ``demonstration_max_turns < 1``, ``relabel_rounds < 0``, ``relabel_episodes < 1``
            or ``relabel_epochs < 1``, before any work.
    """
    import time

    if demonstration_max_turns is not None and demonstration_max_turns < 1:
        raise ValueError(f"demonstration_max_turns must be >= 1, got {demonstration_max_turns}")
    if relabel_rounds < 0:
        raise ValueError(f"relabel_rounds must be >= 0, got {relabel_rounds}")
    per_round = num_episodes if relabel_episodes is None else relabel_episodes
    if per_round < 1:
        raise ValueError(f"relabel_episodes must be >= 1, got {per_round}")
    if relabel_epochs is not None and relabel_epochs < 1:
        raise ValueError(f"relabel_epochs must be >= 1, got {relabel_epochs}")
    round_settings = settings if relabel_epochs is None else replace(settings, epochs=relabel_epochs)
    demonstration_turns = config.max_turns if demonstration_max_turns is None else demonstration_max_turns
    system_prompt = SamplerSettings.from_model_config(config.model_config).system_prompt
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
            max_turns=demonstration_turns,
            system_prompt=system_prompt,
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
            f"warm-up epoch {stats.epoch}/{passes} | loss {stats.loss:.3f} | "
            f"expert-answer prob {stats.answer_prob:.2f} | {stats.num_input_tokens / stats.seconds:.0f} tokens/s | "
            f"{stats.seconds:.1f} s"
        )
        if on_epoch is not None:
            on_epoch(stats)

    batches = DemonstrationBatches(settings.batch_size, settings.trunk_cache_mb)
    passes = settings.epochs
    history = fine_tune(policy, episodes, settings, on_epoch=report, batches=batches)
    policy_success = []
    for round_index in range(relabel_rounds):
        round_start = time.perf_counter()
        first = num_episodes + round_index * per_round
        played = play_policy(
            expert_config,
            policy,
            episode_indices=range(first, first + per_round),
            task_ids=task_ids,
            seed=settings.seed,
        )
        policy_success.append(sum(e.won for e in played) / len(played))
        relabelled = relabel(played, policy.tokenizer)
        episodes += relabelled
        log(
            f"relabelling round {round_index + 1}/{relabel_rounds}: the policy won {policy_success[-1]:.2f} of "
            f"{len(played)} episodes; {sum(len(e.turns) for e in relabelled)} relabelled turns "
            f"({sum(len(e.turns) for e in episodes)} in all) in {time.perf_counter() - round_start:.1f} s"
        )
        passes = round_settings.epochs
        history += fine_tune(policy, episodes, round_settings, on_epoch=report, batches=batches)
    model_dir = Path(output_dir)
    save_policy_model(policy, model_dir)
    result = WarmStartResult(
        model_dir,
        len(episodes),
        sum(len(e.turns) for e in episodes),
        success,
        policy_success,
        history,
        time.perf_counter() - start,
    )
    summary = {
        "base_model": config.model_config["model_name_or_path"],
        "system_prompt": system_prompt,
        "settings": asdict(settings),
        "detour_prob": detour_prob,
        "demonstration_max_turns": demonstration_turns,
        "relabel_rounds": relabel_rounds,
        "relabel_episodes": per_round,
        "relabel_epochs": round_settings.epochs,
        "num_episodes": result.num_episodes,
        "num_turns": result.num_turns,
        "expert_success_rate": result.expert_success_rate,
        "policy_success_rates": result.policy_success_rates,
        "epochs": [asdict(stats) for stats in history],
        "seconds": result.seconds,
    }
    (model_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return result
