"""Render a partial trajectory into the prompt token ids for the next assistant turn.

    renderer = PromptRenderer(tokenizer, max_history_turns=None)
    prompt_ids = renderer.render(trajectory)       # ends with the generation prompt
    samples = policy.sample([prompt_ids], n=4, params=params)

Token exactness (docs/design.md, "Engines"): earlier assistant turns are inserted as the ids the policy
generated (``Step.generated_token_ids``), never re-tokenised text; system and user messages
come from the tokenizer's own chat template. The ids are built segment by segment, so the
prompt of step t+1 is the prompt of step t + the generated ids + the next observation segment
(what a prefix cache reuses). For ordinary text the result equals
``tokenizer.apply_chat_template(messages, add_generation_prompt=True)``.

Context overflow: with ``max_prompt_tokens`` (the agent sets the policy's context minus
``max_new_tokens``) a longer prompt is fitted instead of refused by the engine: the oldest steps
after the task go first, then the middle of the latest observation (``PromptRenderer._fit``).

How: at construction the chat template is rendered once over placeholder messages and cut
at the placeholders into fixed text pieces (head, turn separator, generation prompt). That works
for any template that inserts message contents verbatim and only appends when a turn is
added (ChatML, Llama-3, Gemma ...); anything else is refused with a ConfigError at construction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from ttsearch.envs.base import Observation, Trajectory
from ttsearch.envs.errors import ConfigError

_SYS, _U0, _A0, _U1 = (
    "\u2983TTS-SYSTEM\u2984",
    "\u2983TTS-USER-0\u2984",
    "\u2983TTS-ASSISTANT\u2984",
    "\u2983TTS-USER-1\u2984",
)


@dataclass(frozen=True, slots=True)
class PromptConfig:
    """How states become prompts (saved with a checkpoint pair in ``ttsearch_pair.json``)."""

    max_history_turns: int | None = None
    """Keep only the last k (observation, action) pairs plus the current observation."""
    show_admissible_actions: bool = False
    """Append "Valid actions: a, b, ..." to each observation that lists them."""
    system_prompt: str | None = None
    """Replace the environment's system prompt (None: use the trajectory's)."""

    def __post_init__(self) -> None:
        if self.max_history_turns is not None and self.max_history_turns < 0:
            raise ConfigError(
                f"max_history_turns must be >= 0 or None, got {self.max_history_turns}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown prompt setting(s) {sorted(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**dict(data))


def _cut(text: str, *markers: str) -> list[str]:
    """Split ``text`` at each marker in order; the template must contain each exactly once."""
    pieces = []
    for marker in markers:
        if text.count(marker) != 1:
            raise ConfigError(
                "the chat template does not insert message contents verbatim; PromptRenderer "
                "needs a template that does (e.g. ChatML) — set tokenizer.chat_template"
            )
        before, text = text.split(marker)
        pieces.append(before)
    return [*pieces, text]


class PromptRenderer:
    """Trajectory -> prompt token ids for the next assistant turn (see the module docstring)."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_history_turns: int | None = None,
        show_admissible_actions: bool = False,
        system_prompt: str | None = None,
        max_prompt_tokens: int | None = None,
        cache_size: int = 4096,
    ):
        self.tokenizer = tokenizer
        if max_prompt_tokens is not None and max_prompt_tokens < 1:
            raise ConfigError(f"max_prompt_tokens must be >= 1 or None, got {max_prompt_tokens}")
        self.max_prompt_tokens = max_prompt_tokens
        """Longest prompt (the model's context minus max_new_tokens); longer ones are fitted."""
        self.config = PromptConfig(max_history_turns, show_admissible_actions, system_prompt)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "the tokenizer has no chat_template; set one (e.g. ChatML) before rendering prompts"
            )
        self._cache: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._special = frozenset(getattr(tokenizer, "all_special_ids", ()) or ())
        self._derive_pieces()

    @classmethod
    def from_config(cls, tokenizer: Any, config: PromptConfig) -> PromptRenderer:
        return cls(
            tokenizer,
            max_history_turns=config.max_history_turns,
            show_admissible_actions=config.show_admissible_actions,
            system_prompt=config.system_prompt,
        )

    # -- template analysis ----------------------------------------------------------------
    def _template(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def _derive_pieces(self) -> None:
        sys_msg = {"role": "system", "content": _SYS}
        u0, a0, u1 = (
            {"role": r, "content": c} for r, c in (("user", _U0), ("assistant", _A0), ("user", _U1))
        )
        # head with and without a system message: text before/between/after the contents
        self._head_sys = _cut(self._template([sys_msg, u0], True), _SYS, _U0)
        self._head_plain = _cut(self._template([u0], True), _U0)
        one = self._template([u0], True)
        two = self._template([u0, a0, u1], True)
        if not two.startswith(one):
            raise ConfigError(
                "the chat template is not prefix-stable (adding a turn rewrites earlier text); "
                "PromptRenderer needs one that only appends — set tokenizer.chat_template"
            )
        assistant_pre, self._turn_between, self._turn_after = _cut(two[len(one) :], _A0, _U1)
        if assistant_pre:
            raise ConfigError(
                "the chat template adds text before the assistant content beyond its generation prompt"
            )
        self._self_check()

    def _self_check(self) -> None:
        """The cut pieces must reproduce the template on a real multi-turn conversation."""
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "You see a door."},
            {"role": "assistant", "content": "open door"},
            {"role": "user", "content": "The door opens."},
        ]
        expected = self._template(messages, True)
        got = (
            self._head_text("Be brief.", "You see a door.")
            + "open door"
            + self._turn_between
            + "The door opens."
            + self._turn_after
        )
        if got != expected:
            raise ConfigError(
                "the chat template renders turns differently depending on their position; "
                "PromptRenderer needs a ChatML-like template — set tokenizer.chat_template"
            )

    def _head_text(self, system: str, first_user: str) -> str:
        if system:
            pre, mid, post = self._head_sys
            return pre + system + mid + first_user + post
        pre, post = self._head_plain
        return pre + first_user + post

    # -- rendering ------------------------------------------------------------------------
    def _encode(self, text: str) -> tuple[int, ...]:
        ids = self._cache.get(text)
        if ids is None:
            ids = tuple(self.tokenizer.encode(text, add_special_tokens=False))
            self._cache[text] = ids
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(text)
        return ids

    def observation_text(self, observation: Observation) -> str:
        text = observation.text
        if self.config.show_admissible_actions and observation.admissible_actions:
            text += "\n\nValid actions: " + ", ".join(observation.admissible_actions)
        return text

    def system_text(self, trajectory: Trajectory) -> str:
        override = self.config.system_prompt
        return trajectory.system_prompt if override is None else override

    def _window(self, trajectory: Trajectory) -> tuple[int, list[Observation]]:
        """Index of the first kept step and the observations (one per kept step, plus the current)."""
        steps = trajectory.steps
        k = self.config.max_history_turns
        start = 0 if k is None else max(0, len(steps) - k)
        observations = [trajectory.initial_observation] + [s.result.observation for s in steps]
        return start, observations[start:]

    def messages(self, trajectory: Trajectory) -> list[dict[str, str]]:
        """The chat messages the prompt stands for (assistant turns as their recorded text)."""
        start, observations = self._window(trajectory)
        system = self.system_text(trajectory)
        out = [{"role": "system", "content": system}] if system else []
        for i, obs in enumerate(observations):
            out.append({"role": "user", "content": self.observation_text(obs)})
            if start + i < len(trajectory.steps):
                out.append(
                    {"role": "assistant", "content": trajectory.steps[start + i].action_text}
                )
        return out

    def render(self, trajectory: Trajectory) -> tuple[int, ...]:
        """Prompt ids for the next assistant turn of ``trajectory`` (ends with the generation prompt).

        Past ``max_prompt_tokens`` the prompt is fitted (see :meth:`_fit`), never refused here."""
        start, observations = self._window(trajectory)
        texts = [self.observation_text(obs) for obs in observations]
        ids = self._assemble(self.system_text(trajectory), texts[0], trajectory.steps[start:], texts[1:])
        if self.max_prompt_tokens is not None and len(ids) > self.max_prompt_tokens:
            return self._fit(trajectory)
        return ids

    def _assemble(self, system: str, first: str, steps: Sequence[Any], after: Sequence[str]) -> tuple[int, ...]:
        """Head (system + first observation), then each step's generated ids and the next observation."""
        ids = list(self._encode(self._head_text(system, first)))
        for step, text in zip(steps, after, strict=True):
            generated = step.generated_token_ids or self._encode(step.action_text)
            ids.extend(generated)
            tail = self._encode(self._turn_between + text + self._turn_after)
            # The turn separator opens with the end-of-turn token; when the policy already
            # emitted it (the usual stop), it is part of the generated ids: don't repeat it.
            if generated and tail and tail[0] == generated[-1] and tail[0] in self._special:
                tail = tail[1:]
            ids.extend(tail)
        return tuple(ids)

    def _fit(self, trajectory: Trajectory) -> tuple[int, ...]:
        """The prompt cut to ``max_prompt_tokens``: the system prompt, the first observation (the
        task) and the latest step always stay; the oldest steps between them go first; if that
        is still too long, the middle of the latest observation (of the task, before any step)
        is replaced by a ``[... N tokens cut ...]`` marker. A system prompt that alone does not
        fit is a ConfigError."""
        limit = self.max_prompt_tokens
        assert limit is not None
        system, steps = self.system_text(trajectory), trajectory.steps
        texts = [self.observation_text(trajectory.initial_observation)]
        texts += [self.observation_text(s.result.observation) for s in steps]
        floor = len(self._encode(self._head_text(system, "")))
        if floor >= limit:
            raise ConfigError(f"the system prompt alone takes {floor} prompt tokens but the model's context "
                              f"leaves {limit} (max_positions - max_new_tokens); shorten it or lower max_new_tokens")
        for drop in range(max(1, self._window(trajectory)[0]), len(steps)):
            ids = self._assemble(system, texts[0], steps[drop:], texts[drop + 1:])
            if len(ids) <= limit:
                return ids
        kept = steps[-1:]
        for _ in range(4):  # re-tokenising the cut text can shift its length by a few tokens
            ids = self._assemble(system, texts[0], kept, texts[-1:] if kept else [])
            excess = len(ids) - limit
            if excess <= 0:
                return ids
            texts[-1] = self._cut_middle(texts[-1], excess)
        raise ConfigError(f"could not fit the prompt into {limit} tokens (the system prompt and the latest "
                          "action alone are too long); lower max_new_tokens")

    def _cut_middle(self, text: str, excess: int) -> str:
        """``text`` with its middle replaced by a marker, at least ``excess`` tokens shorter."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        marker = len(self.tokenizer.encode(f"\n[... {len(ids)} tokens cut ...]\n", add_special_tokens=False))
        keep = len(ids) - excess - marker
        if keep < 2:
            raise ConfigError(f"could not fit the prompt into {self.max_prompt_tokens} tokens: cutting the "
                              f"latest observation is not enough; lower max_new_tokens")
        head, tail = ids[: keep // 2], ids[len(ids) - (keep - keep // 2):]
        decode = self.tokenizer.decode
        return f"{decode(head)}\n[... {len(ids) - keep} tokens cut ...]\n{decode(tail)}"

    def with_limit(self, max_prompt_tokens: int | None) -> PromptRenderer:
        """This renderer (same tokenizer and settings) fitting prompts to ``max_prompt_tokens``."""
        if max_prompt_tokens == self.max_prompt_tokens:
            return self
        return PromptRenderer(self.tokenizer, max_history_turns=self.config.max_history_turns,
                              show_admissible_actions=self.config.show_admissible_actions,
                              system_prompt=self.config.system_prompt, max_prompt_tokens=max_prompt_tokens,
                              cache_size=self._cache_size)

    def render_many(self, states: Sequence[Trajectory]) -> list[tuple[int, ...]]:
        return [self.render(state) for state in states]
