"""ttsearch.envs: the environment protocol, core types, registry and adapters.

    from ttsearch.envs import make, list_tasks, Env, Task
    from ttsearch.envs import check_env, GymTextEnv     # conformance checker, Gymnasium adapter
"""

from ttsearch.envs.base import (
    SUCCESS_REWARD,
    Env,
    Observation,
    Step,
    StepResult,
    Task,
    Trajectory,
)
from ttsearch.envs.check_env import CheckReport, CheckResult, check_env
from ttsearch.envs.errors import (
    BackendError,
    BudgetExhausted,
    ConfigError,
    EnvError,
    ParseError,
    TtsearchError,
)
from ttsearch.envs.gym_wrapper import GymTextEnv
from ttsearch.envs.registry import REGISTRY, list_tasks, make, register

__all__ = [
    "SUCCESS_REWARD", "Env", "Observation", "Step", "StepResult", "Task", "Trajectory",
    "BackendError", "BudgetExhausted", "ConfigError", "EnvError", "ParseError", "TtsearchError",
    "REGISTRY", "list_tasks", "make", "register",
    "CheckReport", "CheckResult", "check_env", "GymTextEnv",
]
