"""ttsearch.envs: the environment protocol, core types, registry and adapters.

    from ttsearch.envs import make, list_tasks, Env, Task
    from ttsearch.envs import check_env, GymTextEnv     # conformance checker, Gymnasium adapter
    from ttsearch.envs import register, import_modules  # user environments (see envs.registry)
    from ttsearch.envs import check_observation, check_step_result   # the boundary checks
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
from ttsearch.envs.registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    env_names,
    import_modules,
    list_tasks,
    make,
    register,
)
from ttsearch.envs.validation import check_observation, check_step_result

__all__ = [
    "SUCCESS_REWARD", "Env", "Observation", "Step", "StepResult", "Task", "Trajectory",
    "BackendError", "BudgetExhausted", "ConfigError", "EnvError", "ParseError", "TtsearchError",
    "ENTRY_POINT_GROUP", "REGISTRY", "env_names", "import_modules", "list_tasks", "make", "register",
    "check_observation", "check_step_result",
    "CheckReport", "CheckResult", "check_env", "GymTextEnv",
]
