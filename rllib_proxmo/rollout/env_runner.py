"""An EnvRunner that plays whole task groups with batched LLM generation.

Each :meth:`GroupedEnvRunner.sample` call receives :class:`GroupRequest`s, resets
``size`` envs per group to the same initial state (same seed, same pinned task) and
steps all live episodes in lockstep: one ``engine.generate`` call per turn covers
every unfinished episode of every group, and finished episodes leave the batch.

Env contract (LLM-facing env): ``reset(seed, options) -> (prompt: str, info)``,
``step(response_text) -> (prompt, reward, terminated, truncated, info)``; ``info``
carries ``state`` (raw observation text), ``task_id``, ``task_type``, ``won``, and
after a step ``format_valid`` / ``action_admissible``. An env that can shorten its
prompt also has ``history_turns`` (remembered steps the prompt shows) and
``render_prompt(history_turns) -> str`` (:class:`envs.llm_wrappers.PromptWrapper`
does); the runner uses them to fit ``max_prompt_tokens``.

The sampler is the policy the learner scores: training samples from
``softmax(logits / temperature)`` with the module's own ``temperature`` and nothing
else (no top-p, top-k or checkpoint generation defaults), and every turn keeps the
engine's per-token log-probs (``Turn.sampler_logp``) and whether ``max_new_tokens``
cut the response (``Turn.cut``). The other sampling settings of the model config
are :class:`SamplerSettings`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import ray
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.framework import get_device
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO
from ray.rllib.utils.typing import StateDict

from envs.llm_wrappers import EXPERT_ACTION, answer_choices, format_response
from rllib_proxmo.rollout import chat
from rllib_proxmo.rollout.engine_choice import DEFAULT_ENGINE, check_engine
from rllib_proxmo.rollout.engines import InferenceEngine, SamplingParams
from rllib_proxmo.rollout.engines.factory import build_engine
from rllib_proxmo.rollout.env_factory import make_text_env
from rllib_proxmo.rollout.episodes import GroupRequest, TextEpisode, Turn

logger = logging.getLogger(__name__)

TEXT_SPACE = gym.spaces.Text(max_length=1 << 20)
GENERATED_TOKENS = "generated_tokens"
#: Prompt tokens sent to the engine, and those of them a shared prefill did not recompute.
PROMPT_TOKENS = "prompt_tokens"
SHARED_PREFILL_TOKENS = "shared_prefill_tokens"
GENERATION_S = "generation_s"
ENV_STEP_S = "env_step_s"
ENV_RESET_S = "env_reset_s"
#: Prompts re-rendered with fewer history turns to fit ``max_prompt_tokens``.
PROMPT_HISTORY_CUTS = "prompt_history_cut_count"
#: Counters an env runner accumulates between two ``get_metrics`` calls.
RUNNER_STATS = (
    GENERATED_TOKENS,
    PROMPT_TOKENS,
    SHARED_PREFILL_TOKENS,
    GENERATION_S,
    ENV_STEP_S,
    ENV_RESET_S,
    PROMPT_HISTORY_CUTS,
)
#: State key of the id the algorithm gives every version of the learner's weights it pushes
#: (:meth:`rllib_proxmo.algorithm.proxmo.ProxMO.sync_env_runner_weights`); a runner reports
#: the id of the weights it holds, so that the driver can check it before sampling.
WEIGHTS_ID = "proxmo_weights_id"


@dataclass(frozen=True)
class SamplerSettings:
    """The env runner's sampling settings, read from the RLModule's ``model_config``.

    The training temperature is not among them: it is the module's ``temperature``
    (:class:`~rllib_proxmo.algorithm.torch.llm_rl_module.LLMRLModule`), the one the
    learner's log-probs use. Nucleus sampling while training is refused (``top_p < 1``
    in the model config): the learner scores the full temperature-scaled softmax, so
    a truncated sampler would make every importance ratio wrong.

    Attributes:
        max_new_tokens: Response length cap (tokens, the stop token included).
        eval_temperature: Temperature of evaluation (``explore=False``); 0 = greedy.
        eval_top_p: Nucleus mass of evaluation sampling (1.0: off).
        max_prompt_tokens: Longest prompt sent to the model; a longer one is re-rendered
            with fewer history turns, oldest dropped first, and fails when even no
            history fits. None: unlimited.
        engine: ``"hf"`` or ``"vllm"`` (:mod:`rllib_proxmo.rollout.engines.factory`).
        reuse_sampler_trunk: Keep, for every sampled turn, the input hidden states of the
            policy's lowest trained block (``Turn.trunk_states``): the learner then runs
            only the trained blocks. Needs ``trainable_layers`` and the HF engine; costs
            4·D bytes per token in the episodes (about 2 KB for SmolLM2-135M).
        constrain_to_admissible: Hold every answer to one of the admissible commands the
            template lists, in the template's answer form (:func:`envs.llm_wrappers.answer_choices`;
            the prompt itself may show neither, as ``"alfworld-unlisted"`` does),
            in training and evaluation: the engine samples from the model's distribution
            restricted, token by token, to those answers (``choices`` of the HF engine), so
            no turn is lost to a malformed or inadmissible answer. The turns keep the
            model's unrestricted log-probs, which the learner computes; the PPO ratio and the
            KL term are those of the unrestricted policy. Needs the HF engine, a prompt
            without a think block (``llm_env_config`` ``require_think=False``) and
            ``eval_top_p`` 1; a state whose commands take free text (WebShop's search) is
            answered freely.
        system_prompt: The system message every prompt is sent with
            (:func:`rllib_proxmo.rollout.chat.prompt_ids`): None, the chat template's own
            default; ``""``, an empty one. The warm start's demonstrations use it too.
    """

    max_new_tokens: int = 64
    eval_temperature: float = 0.0
    eval_top_p: float = 1.0
    max_prompt_tokens: int | None = None
    engine: str = DEFAULT_ENGINE
    reuse_sampler_trunk: bool = False
    constrain_to_admissible: bool = False
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        check_engine(self.engine)
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ValueError(f"system_prompt must be None or a str, got {self.system_prompt!r}")
        for name in ("reuse_sampler_trunk", "constrain_to_admissible"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.constrain_to_admissible and (self.engine != "hf" or self.eval_top_p != 1.0):
            raise ValueError(
                f"constrain_to_admissible needs the 'hf' engine and eval_top_p 1.0 (got engine {self.engine!r}, "
                f"eval_top_p {self.eval_top_p}): the vLLM engine cannot restrict an answer, and a nucleus "
                "could leave no admissible one"
            )
        if self.reuse_sampler_trunk and self.engine != "hf":
            raise ValueError(
                f"reuse_sampler_trunk needs the 'hf' engine (the {self.engine!r} engine keeps no hidden states)"
            )
        if self.max_prompt_tokens is not None and (
            isinstance(self.max_prompt_tokens, bool)
            or not isinstance(self.max_prompt_tokens, int)
            or self.max_prompt_tokens < 1
        ):
            raise ValueError(f"max_prompt_tokens must be None or an int >= 1, got {self.max_prompt_tokens!r}")
        # The sampling values themselves are checked by SamplingParams.
        SamplingParams(self.max_new_tokens, self.eval_temperature, self.eval_top_p)

    @classmethod
    def from_model_config(cls, model_config: Mapping[str, Any]) -> SamplerSettings:
        """The settings of ``model_config`` (missing keys take the defaults above).

        Raises:
            ValueError: for ``top_p < 1`` (training) or an invalid setting.
        """
        top_p = model_config.get("top_p", 1.0)
        if top_p != 1.0:
            raise ValueError(
                f"model_config top_p={top_p} is not supported while training: the learner scores the "
                "full temperature-scaled softmax, so the sampler must not truncate it; set eval_top_p "
                "for evaluation instead"
            )
        if model_config.get("reuse_sampler_trunk") and model_config.get("trainable_layers") is None:
            raise ValueError(
                "model_config reuse_sampler_trunk needs trainable_layers: with every weight trained there is no "
                "frozen trunk to reuse"
            )
        names = [name for name in cls.__dataclass_fields__ if name in model_config]
        return cls(**{name: model_config[name] for name in names})


class _LiveEpisode:
    """Bookkeeping of one episode while it is being played."""

    __slots__ = ("actions", "env", "episode", "expert_action", "prompt", "state")

    def __init__(self, env: gym.Env, episode: TextEpisode, prompt: str, info: Mapping[str, Any]) -> None:
        self.env = env
        self.episode = episode
        self.observe(prompt, info)

    def observe(self, prompt: str, info: Mapping[str, Any]) -> None:
        """Take the env's next prompt, state text and admissible commands."""
        self.prompt = prompt
        self.state = str(info["state"])
        self.actions = list(info.get("admissible_actions") or ())
        self.expert_action = info.get(EXPERT_ACTION)


def _answer_format(env: gym.Env) -> tuple[Any, bool] | None:
    """The prompt template and ``require_think`` of an env with the LLM wrappers; None without them."""
    try:
        return env.get_wrapper_attr("template"), env.get_wrapper_attr("require_think")
    except AttributeError:
        return None


class GroupedEnvRunner(EnvRunner, Checkpointable):
    """Plays groups of same-task rollouts; generation batched over all live episodes."""

    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self._envs: list[gym.Env] = []
        self.module = None
        self.engine: InferenceEngine | None = None
        self._stats = dict.fromkeys(RUNNER_STATS, 0.0)
        self._weights_seq_no = 0
        #: Id of the weights pushed last (None: the weights the module was built with).
        self.weights_id: str | None = None
        self.settings = SamplerSettings.from_model_config(self.config.model_config)
        self._warned_long_answers = False
        self.make_module()

    # ----------------------------------------------------------------- set-up
    def make_env(self) -> None:
        """Envs are created on demand, as many as the largest sample call needs."""

    def _env_pool(self, count: int) -> list[gym.Env]:
        while len(self._envs) < count:
            self._envs.append(make_text_env(self.config, worker_index=self.worker_index, index=len(self._envs)))
        return self._envs[:count]

    def make_module(self) -> None:
        """Build the inference-only policy and its engine on this runner's device.

        The device follows RLlib's ``SingleAgentEnvRunner``: the GPU Ray assigned to a
        remote runner when ``num_gpus_per_env_runner > 0``, else the CPU; the local
        runner (``worker_index`` 0) always samples on the CPU, with the HF engine
        (:func:`~rllib_proxmo.rollout.engines.factory.build_engine`).
        """
        spec = self.config.get_rl_module_spec(spaces={DEFAULT_MODULE_ID: (TEXT_SPACE, TEXT_SPACE)}, inference_only=True)
        self.device = get_device(
            self.config, num_gpus_requested=self.config.num_gpus_per_env_runner if self.worker_index else 0
        )
        self.module = spec.build()
        self.engine_name = self.settings.engine if self.worker_index else "hf"
        self.engine = build_engine(
            self.engine_name,
            self.module,
            self.device,
            self.config.model_config,
            max_prompt_tokens=self.settings.max_prompt_tokens,
            max_new_tokens=self.settings.max_new_tokens,
            trunk_block=self.module.first_trained_block if self.settings.reuse_sampler_trunk else None,
            num_threads=max(1, int(self.config.num_cpus_per_env_runner)),
        )

    def get_spaces(self) -> dict[str, tuple[gym.Space, gym.Space]]:
        return {DEFAULT_MODULE_ID: (TEXT_SPACE, TEXT_SPACE), "__env__": (TEXT_SPACE, TEXT_SPACE)}

    def assert_healthy(self) -> None:
        if self.module is None or self.engine is None:
            raise RuntimeError("GroupedEnvRunner has no module/engine")

    # ------------------------------------------------------------- sampling
    def _encode_prompt(self, prompt: str) -> tuple[int, ...]:
        return chat.prompt_ids(self.module.tokenizer, prompt, self.settings.system_prompt)

    def _prompt_ids(self, item: _LiveEpisode) -> tuple[int, ...]:
        """Token ids of the episode's prompt, within ``max_prompt_tokens``.

        An over-long prompt is re-rendered with one history turn less at a time
        (oldest first) until it fits; each shortened prompt counts once in
        ``prompt_history_cut_count``.

        Raises:
            ValueError: when the prompt is too long even without history (or the env
                cannot re-render it), naming the task and the lengths.
        """
        ids = self._encode_prompt(item.prompt)
        limit = self.settings.max_prompt_tokens
        if limit is None or len(ids) <= limit:
            return ids
        full_length = len(ids)
        render = getattr(item.env, "render_prompt", None)
        shown = item.env.history_turns if render is not None else 0
        for history_turns in range(shown - 1, -1, -1):
            ids = self._encode_prompt(render(history_turns))
            if len(ids) <= limit:
                self._stats[PROMPT_HISTORY_CUTS] += 1
                return ids
        if render is None:
            detail = f"{full_length} tokens and the env cannot re-render it with less history"
        elif shown == 0:
            detail = f"{full_length} tokens and no history to drop"
        else:
            detail = f"{len(ids)} tokens even without history ({full_length} with its {shown} history turns)"
        raise ValueError(
            f"task {item.episode.task_id!r}: the prompt has {detail}, more than "
            f"max_prompt_tokens={limit}; raise max_prompt_tokens or shorten the prompt template"
        )

    def _answer_choices(self, item: _LiveEpisode) -> list[tuple[int, ...]] | None:
        """The token ids of every answer naming one of the episode's listed admissible commands
        (``constrain_to_admissible``); None where its commands take free text or none fits.

        An answer longer than ``max_new_tokens`` could not be written out, so it is left out
        (with one warning per runner); a state none of whose answers fits is answered freely.

        Raises:
            ValueError: for an env without the LLM wrappers, or whose prompt asks for a think
                block (free text before the answer).
        """
        answer_format = _answer_format(item.env)
        if answer_format is None:
            raise ValueError(
                "model_config constrain_to_admissible needs the LLM wrappers (llm_env_config set): they list "
                "the admissible commands and parse the answers"
            )
        template, require_think = answer_format
        if require_think:
            raise ValueError(
                "model_config constrain_to_admissible needs a prompt without a think block "
                "(llm_env_config require_think=False)"
            )
        answers = answer_choices(item.actions, template=template)
        if answers is None:
            return None
        fitting, too_long = chat.answer_ids(self.module.tokenizer, answers, self.settings.max_new_tokens)
        if too_long and not self._warned_long_answers:
            self._warned_long_answers = True
            longest, length = max(too_long, key=lambda answer: answer[1])
            logger.warning(
                "constrain_to_admissible: %d of %d admissible answers exceed max_new_tokens=%d (the longest, %d "
                "tokens: %.100r) and are left out; raise max_new_tokens to let the agent give them",
                len(too_long),
                len(answers),
                self.settings.max_new_tokens,
                length,
                longest,
            )
        return fitting or None

    @staticmethod
    def _expert_answer(item: _LiveEpisode) -> str | None:
        """The env's expert command in the episode's current state, written as its prompt asks
        (the command itself for an env without the LLM wrappers); None when there is none."""
        command = item.expert_action
        if command is None:
            return None
        answer_format = _answer_format(item.env)
        if answer_format is None:
            return str(command)
        template, require_think = answer_format
        return format_response(str(command), item.actions, template=template, require_think=require_think)

    def _sampling_params(self, explore: bool, seed: int) -> SamplingParams:
        """Training: the module's temperature, no truncation; evaluation: the eval settings."""
        settings = self.settings
        if explore:
            return SamplingParams(settings.max_new_tokens, float(self.module.temperature), 1.0, seed)
        return SamplingParams(settings.max_new_tokens, settings.eval_temperature, settings.eval_top_p, seed)

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
                live.append(_LiveEpisode(env, episode, prompt, info))
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
        if self.engine_name != self.settings.engine:
            logger.warning(
                "the local env runner samples with the %r engine on the CPU (engine=%r runs on remote env "
                "runners only; the local one samples when no remote runner is healthy)",
                self.engine_name,
                self.settings.engine,
            )
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
            prompts = [self._prompt_ids(item) for item in live]
            choices = [self._answer_choices(item) for item in live] if self.settings.constrain_to_admissible else None
            start = time.perf_counter()
            generations = self.engine.generate(prompts, self._sampling_params(explore, seed + turn_index), choices)
            self._stats[GENERATION_S] += time.perf_counter() - start
            self._stats[GENERATED_TOKENS] += sum(len(g.token_ids) for g in generations)
            self._stats[PROMPT_TOKENS] += sum(len(p) for p in prompts)
            self._stats[SHARED_PREFILL_TOKENS] += getattr(self.engine, "shared_prefill_tokens", 0)
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
                        action=str(info.get("parsed_action") or generation.text),
                        format_valid=bool(info.get("format_valid", True)),
                        action_admissible=bool(info.get("action_admissible", True)),
                        action_repaired=bool(info.get("action_repaired", False)),
                        penalty=float(info.get("invalid_penalty", 0.0)),
                        sampler_logp=generation.logprobs,
                        cut=not generation.stopped,
                        trunk_states=generation.trunk_states if explore else None,
                        expert_answer=self._expert_answer(item),
                    )
                )
                item.episode.won = bool(info.get("won", False))
                item.episode.score = float(info["score"]) if "score" in info else None
                if terminated or truncated:
                    item.episode.truncated = bool(truncated and not terminated)
                    finished.append(item.episode)
                else:
                    item.observe(prompt, info)
                    still_live.append(item)
            self._stats[ENV_STEP_S] += time.perf_counter() - start
            live = still_live
            turn_index += 1
        self.engine.pause()
        order = {group.group_id: rank for rank, group in enumerate(groups)}
        finished.sort(key=lambda episode: order[episode.group_id])
        return finished

    def get_metrics(self) -> dict[str, float]:
        """Generation/env counters since the last call (then reset)."""
        stats, self._stats = self._stats, dict.fromkeys(RUNNER_STATS, 0.0)
        return stats

    # ---------------------------------------------------------------- state
    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> StateDict:
        """The inference-only policy weights, their ``weights_seq_no`` and weights id, unless
        ``not_components`` excludes the module.

        Everything else an env runner holds (envs, counters) is rebuilt per call, so
        algorithm checkpoints store nothing from here (:class:`~rllib_proxmo.algorithm.proxmo.ProxMO`
        leaves env runners out of its checkpoint components); the weights come from the learner.
        """
        if not self._check_component(COMPONENT_RL_MODULE, components, not_components):
            return {}
        return {
            COMPONENT_RL_MODULE: {DEFAULT_MODULE_ID: self.module.get_state(inference_only=True)},
            WEIGHTS_SEQ_NO: self._weights_seq_no,
            WEIGHTS_ID: self.weights_id,
        }

    def set_state(self, state: StateDict) -> None:
        """Load the policy weights ``state`` carries, whatever their ``weights_seq_no``.

        RLlib's own runners skip weights whose sequence number is not above the one
        they hold; but a restore sets the learner's counter back to the checkpoint's,
        so ordering would keep a runner on the pre-restore weights until the learner
        counted past them again (and equality could still collide across two
        branches). The weights have already been shipped when this runs; loading
        them costs one copy into the model. The number is kept for :meth:`get_state`,
        and the weights id (:data:`WEIGHTS_ID`, None when the state carries none, as
        RLlib's own pushes) is what :attr:`weights_id` reports from then on.
        """
        if COMPONENT_RL_MODULE not in state:
            return
        module_state = state[COMPONENT_RL_MODULE]
        if isinstance(module_state, ray.ObjectRef):
            module_state = ray.get(module_state)
        module_state = module_state.get(DEFAULT_MODULE_ID, module_state)
        self.module.set_state(module_state)
        self.engine.update_weights(module_state)
        self._weights_seq_no = state.get(WEIGHTS_SEQ_NO, 0)
        self.weights_id = state.get(WEIGHTS_ID)

    def get_ctor_args_and_kwargs(self) -> tuple[tuple, dict]:
        return (), {"config": self.config}

    def stop(self) -> None:
        for env in self._envs:
            env.close()
        self._envs.clear()
