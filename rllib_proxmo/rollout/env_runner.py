"""An EnvRunner that plays whole task groups with batched LLM generation.

Each :meth:`GroupedEnvRunner.sample` call receives :class:`GroupRequest`s, resets
``size`` envs per group to the same initial state (same seed, same pinned task) and
steps all live episodes in lockstep: one ``engine.generate`` call per turn covers
every unfinished episode of every group, and finished episodes leave the batch.

Env contract (LLM-facing env): ``reset(seed, options) -> (prompt: str, info)``,
``step(response_text) -> (prompt, reward, terminated, truncated, info)``; ``info``
carries ``state`` (raw observation text), ``task_id``, ``task_type``, ``won``, and
after a step ``format_valid`` / ``action_admissible``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import ray
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO
from ray.rllib.utils.typing import StateDict

from rllib_proxmo.rollout.engines import HFEngine, InferenceEngine, SamplingParams
from rllib_proxmo.rollout.env_factory import make_text_env
from rllib_proxmo.rollout.episodes import GroupRequest, TextEpisode, Turn

logger = logging.getLogger(__name__)

TEXT_SPACE = gym.spaces.Text(max_length=1 << 20)
GENERATED_TOKENS = "generated_tokens"
GENERATION_S = "generation_s"
ENV_STEP_S = "env_step_s"
ENV_RESET_S = "env_reset_s"
#: Counters an env runner accumulates between two ``get_metrics`` calls.
RUNNER_STATS = (GENERATED_TOKENS, GENERATION_S, ENV_STEP_S, ENV_RESET_S)


class _LiveEpisode:
    """Bookkeeping of one episode while it is being played."""

    __slots__ = ("env", "episode", "prompt", "state")

    def __init__(self, env: gym.Env, episode: TextEpisode, prompt: str, state: str) -> None:
        self.env = env
        self.episode = episode
        self.prompt = prompt
        self.state = state


class GroupedEnvRunner(EnvRunner, Checkpointable):
    """Plays groups of same-task rollouts; generation batched over all live episodes."""

    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self._envs: list[gym.Env] = []
        self.module = None
        self.engine: InferenceEngine | None = None
        self._stats = dict.fromkeys(RUNNER_STATS, 0.0)
        self._weights_seq_no = 0
        self.make_module()

    # ----------------------------------------------------------------- set-up
    def make_env(self) -> None:
        """Envs are created on demand, as many as the largest sample call needs."""

    def _env_pool(self, count: int) -> list[gym.Env]:
        while len(self._envs) < count:
            self._envs.append(make_text_env(self.config, worker_index=self.worker_index, index=len(self._envs)))
        return self._envs[:count]

    def make_module(self) -> None:
        spec = self.config.get_rl_module_spec(spaces={DEFAULT_MODULE_ID: (TEXT_SPACE, TEXT_SPACE)}, inference_only=True)
        self.module = spec.build()
        self.engine = HFEngine(self.module.model, self.module.tokenizer)

    def get_spaces(self) -> dict[str, tuple[gym.Space, gym.Space]]:
        return {DEFAULT_MODULE_ID: (TEXT_SPACE, TEXT_SPACE), "__env__": (TEXT_SPACE, TEXT_SPACE)}

    def assert_healthy(self) -> None:
        if self.module is None or self.engine is None:
            raise RuntimeError("GroupedEnvRunner has no module/engine")

    # ------------------------------------------------------------- sampling
    def _encode_prompt(self, prompt: str) -> tuple[int, ...]:
        tokenizer = self.module.tokenizer
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _sampling_params(self, explore: bool, seed: int) -> SamplingParams:
        model_config = self.config.model_config
        temperature = model_config.get("temperature", 1.0) if explore else model_config.get("eval_temperature", 0.0)
        return SamplingParams(
            max_new_tokens=int(model_config.get("max_new_tokens", 64)),
            temperature=float(temperature),
            top_p=float(model_config.get("top_p", 1.0)),
            seed=seed,
        )

    def _reset_groups(self, groups: Sequence[GroupRequest]) -> list[_LiveEpisode]:
        envs = self._env_pool(sum(g.size for g in groups))
        live: list[_LiveEpisode] = []
        for group in groups:
            task_id = group.task_id
            for _ in range(group.size):
                env = envs[len(live)]
                options = None if task_id is None else {"task_id": task_id}
                prompt, info = env.reset(seed=group.seed, options=options)
                task_id = info["task_id"]
                episode = TextEpisode(
                    episode_id=uuid.uuid4().hex,
                    group_id=group.group_id,
                    task_id=str(task_id),
                    task_type=str(info.get("task_type", "")),
                )
                live.append(_LiveEpisode(env, episode, prompt, str(info["state"])))
        return live

    def sample(
        self,
        *,
        groups: Sequence[GroupRequest] = (),
        explore: bool = True,
        seed: int = 0,
        max_turns: int | None = None,
        **kwargs: Any,
    ) -> list[TextEpisode]:
        """Play every group to the end and return all episodes (group members adjacent).

        Args:
            groups: Tasks to play, each ``size`` times.
            explore: Sample at the training temperature (True) or evaluate (False:
                ``eval_temperature``, 0 = greedy).
            seed: Base seed of the sampling RNG; turn k uses ``seed + k``.
            max_turns: Cut episodes (truncated) after this many turns; None relies on
                the env's own time limit.
        """
        start = time.perf_counter()
        live = self._reset_groups(groups)
        self._stats[ENV_RESET_S] += time.perf_counter() - start
        finished: list[TextEpisode] = []
        turn_index = 0
        while live:
            if max_turns is not None and turn_index >= max_turns:
                for item in live:
                    item.episode.truncated = True
                    finished.append(item.episode)
                break
            prompts = [self._encode_prompt(item.prompt) for item in live]
            start = time.perf_counter()
            generations = self.engine.generate(prompts, self._sampling_params(explore, seed + turn_index))
            self._stats[GENERATION_S] += time.perf_counter() - start
            self._stats[GENERATED_TOKENS] += sum(len(g.token_ids) for g in generations)
            still_live = []
            start = time.perf_counter()
            for item, prompt_ids, generation in zip(live, prompts, generations):
                prompt, reward, terminated, truncated, info = item.env.step(generation.text)
                item.episode.turns.append(
                    Turn(
                        prompt_ids=prompt_ids,
                        response_ids=generation.token_ids,
                        reward=float(reward),
                        state=item.state,
                        format_valid=bool(info.get("format_valid", True)),
                        action_admissible=bool(info.get("action_admissible", True)),
                        penalty=float(info.get("invalid_penalty", 0.0)),
                    )
                )
                item.episode.won = bool(info.get("won", False))
                if terminated or truncated:
                    item.episode.truncated = bool(truncated and not terminated)
                    finished.append(item.episode)
                else:
                    item.prompt, item.state = prompt, str(info["state"])
                    still_live.append(item)
            self._stats[ENV_STEP_S] += time.perf_counter() - start
            live = still_live
            turn_index += 1
        order = {group.group_id: rank for rank, group in enumerate(groups)}
        finished.sort(key=lambda episode: order[episode.group_id])
        return finished

    def get_metrics(self) -> dict[str, float]:
        """Generation/env counters since the last call (then reset)."""
        stats, self._stats = self._stats, dict.fromkeys(RUNNER_STATS, 0.0)
        return stats

    # ---------------------------------------------------------------- state
    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> StateDict:
        """The inference-only policy weights, unless ``not_components`` excludes the module.

        Everything else an env runner holds (envs, counters) is rebuilt per call, so
        algorithm checkpoints take the weights from the learners and nothing from here.
        """
        if not self._check_component(COMPONENT_RL_MODULE, components, not_components):
            return {}
        return {COMPONENT_RL_MODULE: {DEFAULT_MODULE_ID: self.module.get_state(inference_only=True)}}

    def set_state(self, state: StateDict) -> None:
        """Load policy weights (skipped when ``weights_seq_no`` says they are not newer)."""
        if COMPONENT_RL_MODULE not in state:
            return
        seq_no = state.get(WEIGHTS_SEQ_NO, 0)
        if seq_no and seq_no <= self._weights_seq_no:
            return
        module_state = state[COMPONENT_RL_MODULE]
        if isinstance(module_state, ray.ObjectRef):
            module_state = ray.get(module_state)
        module_state = module_state.get(DEFAULT_MODULE_ID, module_state)
        self.module.set_state(module_state)
        self.engine.update_weights(module_state)
        self._weights_seq_no = max(self._weights_seq_no, seq_no)

    def get_ctor_args_and_kwargs(self) -> tuple[tuple, dict]:
        return (), {"config": self.config}

    def stop(self) -> None:
        for env in self._envs:
            env.close()
        self._envs.clear()
