"""The tasks a run config names, resolved before any model weights load.

    env, tasks = config_tasks(config, PairManifest.read(pair_dir), limit=5)

``tasks.items`` lists tasks inline (``Task(env, id, seed, {**env kwargs, **item kwargs})``);
otherwise the env's task lister gives the first ``tasks.limit`` tasks of ``tasks.split``. The
env defaults to the pair's (its manifest's env kwargs, minus the solver's ``gamma``, lie under
``tasks.kwargs``). Every problem is a one-line :class:`ConfigError` prefixed ``tasks:``.
"""

from __future__ import annotations

from typing import Any

from ttsearch.benchmarks.run.config import RunConfig
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError, TtsearchError
from ttsearch.envs.registry import env_entry, list_tasks


def config_tasks(config: RunConfig, manifest: Any, *, limit: int | None = None,
                 validation: bool = False) -> tuple[str, list[Task]]:
    """(env spec, tasks) for ``config`` (``manifest``: the pair's, or None); ``limit`` caps them.
    ``validation``: the config's validation tasks instead (env and kwargs as ``tasks`` unless set)."""
    spec = config.validation if validation else config.tasks
    where = "validation" if validation else "tasks"
    if validation and spec is None:
        return "", []
    env = spec.env or config.tasks.env or (manifest.env if manifest is not None and manifest.env else None)
    if env is None:
        raise ConfigError("tasks.env: the pair names no environment; set tasks.env (e.g. maze)")
    env_kwargs = dict(manifest.env_kwargs) if manifest is not None and env == manifest.env else {}
    env_kwargs.pop("gamma", None)  # a solver setting, not needed to play
    env_kwargs.update(config.tasks.kwargs if validation else {})
    env_kwargs.update(spec.kwargs)
    caps = [n for n in (spec.limit, limit) if n is not None]
    try:
        entry = env_entry(env)  # an entry-point name is loaded here: its errors come now
        if spec.items is not None:
            tasks = [Task(env=env, id=item.id, seed=item.seed, kwargs={**env_kwargs, **item.kwargs},
                          split=spec.split) for item in spec.items]
            tasks = tasks[:min(caps)] if caps else tasks
        elif entry.tasks is None:
            raise ConfigError(f"environment {env!r} has no task list; list its tasks in the config: "
                              f"tasks: {{env: {env}, items: [{{id: ..., seed: 0, kwargs: {{...}}}}]}}, or "
                              "register it with tasks='module:lister'")
        else:
            if spec.episode_seed is not None:
                env_kwargs["episode_seed"] = spec.episode_seed
            tasks = list_tasks(env, split=spec.split, limit=min(caps), **env_kwargs)
    except TtsearchError as err:
        raise ConfigError(f"{where}: {err}") from None
    if not tasks:
        raise ConfigError(f"{where}: environment {env!r} listed no tasks for split {spec.split!r}")
    ids = [t.id for t in tasks]
    if len(set(ids)) < len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"{where}: environment {env!r} listed task id(s) {', '.join(dupes[:5])} twice; "
                          "results are keyed by task id, so ids must be unique")
    return env, tasks
