"""A checkpoint pair: the RL-trained policy π_θ and its reference π_ref, sharing one tokenizer.

    pair = ModelPair.load("ckpt/policy", "ckpt/reference", device="cpu", dtype="float32")
    pair = ModelPair.load_dir("runs/maze_pair")     # policy/ + reference/ + ttsearch_pair.json
    pair = ModelPair.load_dir("runs/maze_pair", reference={"merge": "linear", "alpha": 0.5})  # π_α
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=16))
    served = pair.with_backends(SGLangBackend(policy_url), SGLangBackend(reference_url))

Progress advantage is β·(log π_θ − log π_ref) over the *same* token ids, so the two models
must share a tokenizer: mismatched vocabularies or special tokens are refused at load time.
A pair folder may hold ``ttsearch_pair.json`` (:class:`PairManifest`: β, prompt settings,
the environment it was trained on, free-form extras) written by the pair trainer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsearch.agents.base import Backend
from ttsearch.agents.checkpoints.lora import check_model_folder, tokenizer_dir
from ttsearch.agents.checkpoints.merge import ReferenceMerge, merged_reference_dir
from ttsearch.agents.checkpoints.model_spec import resolve_model_spec
from ttsearch.agents.prompting import PromptConfig, PromptRenderer
from ttsearch.envs.errors import BackendError, ConfigError

PAIR_MANIFEST = "ttsearch_pair.json"


@dataclass(frozen=True, slots=True)
class PairManifest:
    """What ``ttsearch_pair.json`` records about a pair folder.

    Reading is lenient because trainers add their own records (losses, recipe settings): prompt
    settings may sit under ``"prompt"`` or at the top level (``"max_history_turns": 0``), and
    every key not named here is kept in ``extra``.
    """

    beta: float = 1.0
    prompt: PromptConfig = field(default_factory=PromptConfig)
    env: str | None = None
    """The environment spec the pair was trained on (e.g. "maze"), if any."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    policy: str = "policy"
    """Sub-folder of the policy checkpoint."""
    reference: str = "reference"
    """Sub-folder of the reference checkpoint, or ``"import:NAME"`` for a model made by
    ``ttsearch pair import-gguf`` (a shipped LoRA pair then needs no copy of its base model)."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def policy_dir(self, folder: str | Path) -> Path:
        return resolve_model_spec(Path(folder), self.policy)

    def reference_dir(self, folder: str | Path) -> Path:
        return resolve_model_spec(Path(folder), self.reference)

    def to_dict(self) -> dict[str, Any]:
        return {
            **dict(self.extra),
            "beta": self.beta,
            "prompt": self.prompt.to_dict(),
            "env": self.env,
            "env_kwargs": dict(self.env_kwargs),
            "policy": self.policy,
            "reference": self.reference,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairManifest:
        data = dict(data)
        prompt_keys = set(PromptConfig.__dataclass_fields__)
        prompt = dict(data.pop("prompt", None) or {})
        for key in prompt_keys & set(data):
            prompt.setdefault(key, data.pop(key))
        try:
            beta = float(data.pop("beta", 1.0))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"beta in {PAIR_MANIFEST} must be a number ({err})") from err
        return cls(
            beta=beta,
            prompt=PromptConfig.from_dict(prompt),
            env=data.pop("env", None),
            env_kwargs=dict(data.pop("env_kwargs", None) or {}),
            policy=str(data.pop("policy", "policy")),
            reference=str(data.pop("reference", "reference")),
            extra=data,
        )

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / PAIR_MANIFEST
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> PairManifest:
        """The manifest in ``folder``, or the defaults when there is none."""
        path = Path(folder) / PAIR_MANIFEST
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON ({err}); fix or delete it") from err
        return cls.from_dict(data)


def _tokenizer_signature(tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab": tokenizer.get_vocab(),
        "special tokens": sorted(
            (t, tokenizer.convert_tokens_to_ids(t)) for t in tokenizer.all_special_tokens
        ),
        "eos": (tokenizer.eos_token, tokenizer.eos_token_id),
        "pad": (tokenizer.pad_token, tokenizer.pad_token_id),
        "bos": (tokenizer.bos_token, tokenizer.bos_token_id),
    }


def check_same_tokenizer(
    policy_tok: Any, reference_tok: Any, policy_name: str, reference_name: str
) -> None:
    """Raise a one-line BackendError when the two tokenizers would give different ids."""
    a, b = _tokenizer_signature(policy_tok), _tokenizer_signature(reference_tok)
    differs = [key for key in a if a[key] != b[key]]
    if not differs:
        return
    detail = ", ".join(differs)
    if "vocab" in differs:
        detail += f" (vocab sizes {len(a['vocab'])} vs {len(b['vocab'])})"
    raise BackendError(
        f"tokenizers differ between {policy_name} and {reference_name}: {detail}; a checkpoint pair "
        "must share one tokenizer — use the reference the policy was trained from, or save the "
        "same tokenizer into both folders"
    )


def _load_tokenizer(path: Path) -> Any:
    # transformers: imported when a pair is loaded, not with ttsearch.agents
    from transformers import AutoTokenizer

    if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise BackendError(
            f"no tokenizer in {path}: save one there with tokenizer.save_pretrained({str(path)!r})"
        )
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise BackendError(
            f"could not load the tokenizer in {path}: {err}".splitlines()[0]
        ) from err


def open_engine(path: str | Path, *, name: str, device: str | None = None, dtype: Any = None,
                cache_bytes: int | None = None) -> Any:
    """An embedded engine (``TransformersBackend``) over one checkpoint folder (model or LoRA
    adapter) with its tokenizer: what a pair loads, and what an engine process builds
    (``cache_bytes``: its prefix-cache budget, None: the engine's default)."""
    # the embedded engine imports torch: loaded when a pair is, not with ttsearch.agents
    from ttsearch.agents.engines.transformers.backend import TransformersBackend

    path = check_model_folder(path)
    sized = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
    return TransformersBackend(path, device=device, dtype=dtype, name=name,
                               tokenizer=_load_tokenizer(tokenizer_dir(path)), **sized)


class ModelPair:
    """Policy and reference backends plus the shared tokenizer, β and prompt settings."""

    def __init__(
        self,
        policy: Backend,
        reference: Backend,
        tokenizer: Any,
        *,
        beta: float = 1.0,
        prompt: PromptConfig | None = None,
        manifest: PairManifest | None = None,
    ):
        if beta <= 0:
            raise ConfigError(f"beta must be > 0, got {beta}")
        self.policy = policy
        self.reference = reference
        self.tokenizer = tokenizer
        self.beta = float(beta)
        self.prompt = prompt or PromptConfig()
        self.manifest = manifest or PairManifest(beta=self.beta, prompt=self.prompt)
        self.reference_merge: ReferenceMerge | None = None
        """How the reference was merged from the pair (None: the pair's own reference)."""

    @classmethod
    def load(
        cls,
        policy_path: str | Path,
        reference_path: str | Path,
        *,
        device: str | None = None,
        dtype: Any = None,
        beta: float = 1.0,
        prompt: PromptConfig | None = None,
        manifest: PairManifest | None = None,
    ) -> ModelPair:
        """Load two local Hugging Face folders as TransformersBackends (tokenizers checked first)."""
        policy_path, reference_path = (
            check_model_folder(policy_path),
            check_model_folder(reference_path),
        )
        policy_tok, reference_tok = _load_tokenizer(tokenizer_dir(policy_path)), _load_tokenizer(reference_path)
        check_same_tokenizer(policy_tok, reference_tok, str(policy_path), str(reference_path))
        policy = open_engine(policy_path, name="policy", device=device, dtype=dtype)
        reference = open_engine(reference_path, name="reference", device=device, dtype=dtype)
        if policy.vocab_size != reference.vocab_size:
            raise BackendError(
                f"output vocab sizes differ: {policy_path} has {policy.vocab_size}, {reference_path} has "
                f"{reference.vocab_size}; the two checkpoints must come from one model family"
            )
        return cls(policy, reference, policy_tok, beta=beta, prompt=prompt, manifest=manifest)

    @classmethod
    def load_dir(
        cls, path: str | Path, *, device: str | None = None, dtype: Any = None,
        reference: ReferenceMerge | Mapping[str, Any] | None = None, merge_cache: str | Path | None = None,
    ) -> ModelPair:
        """Load ``path/policy`` + ``path/reference`` with the settings in ``path/ttsearch_pair.json``.

        The manifest may name other sub-folders (``"policy"``/``"reference"`` keys). ``reference``
        (a :class:`ReferenceMerge` or its dict, e.g. ``{"merge": "ties", "alpha": 0.5}``) replaces
        the reference by the merged π_α (``agents/checkpoints/merge.py``), built once in
        ``merge_cache``; the pair then records it as ``reference_merge``.
        """
        path = Path(path)
        if not path.is_dir():
            raise BackendError(
                f"no pair folder at {path}: expected policy/ and reference/ model folders; "
                "train one with `ttsearch pair train`"
            )
        manifest = PairManifest.read(path)
        reference_dir = manifest.reference_dir(path)
        merge = ReferenceMerge.from_dict(reference) if isinstance(reference, Mapping) else reference
        if merge is not None:
            reference_dir = merged_reference_dir(manifest.policy_dir(path), reference_dir, merge, cache_dir=merge_cache)
        pair = cls.load(
            manifest.policy_dir(path),
            reference_dir,
            device=device,
            dtype=dtype,
            beta=manifest.beta,
            prompt=manifest.prompt,
            manifest=manifest,
        )
        pair.reference_merge = merge
        return pair

    def with_backends(self, policy: Backend, reference: Backend) -> ModelPair:
        """This pair (tokenizer, β, prompt settings) served by other engines, e.g. SGLangBackends."""
        pair = ModelPair(
            policy, reference, self.tokenizer, beta=self.beta, prompt=self.prompt,
            manifest=self.manifest,
        )
        pair.reference_merge = self.reference_merge
        return pair

    def renderer(self) -> PromptRenderer:
        """A prompt renderer over the shared tokenizer with this pair's prompt settings."""
        return PromptRenderer.from_config(self.tokenizer, self.prompt)

    def __repr__(self) -> str:
        return f"ModelPair(policy={self.policy.name!r}, reference={self.reference.name!r}, beta={self.beta})"
