"""Names of the dm_control suite tasks, and loading one by name."""

from typing import Optional, Tuple

from environments import rendering

# dm_control fixes its renderer when first imported.
rendering.select_backend()

from dm_control import suite  # noqa: E402  (must follow the backend choice)
from dm_control.rl import control  # noqa: E402


def task_names() -> Tuple[str, ...]:
    """Every suite task as "domain:task", sorted."""
    return tuple(sorted(f"{domain}:{task}" for domain, task in suite.ALL_TASKS))


def parse_task_name(name: str) -> Tuple[str, str]:
    """Splits "domain:task" into (domain, task); unknown names raise with the valid list."""
    if not isinstance(name, str) or (name.count(":") != 1):
        raise ValueError(
            f"Task name {name!r} is not of the form 'domain:task' (e.g. 'walker:walk'). "
            f"Valid names: {', '.join(task_names())}."
        )
    domain, task = name.split(":")
    if (domain, task) not in suite.ALL_TASKS:
        raise ValueError(f"Unknown task {name!r}. Valid names: {', '.join(task_names())}.")
    return domain, task


def load_task(name: str, seed: int, time_limit: Optional[float] = None) -> control.Environment:
    """The raw dm_control environment; `time_limit` in seconds overrides the task's own."""
    domain, task = parse_task_name(name)
    task_kwargs = {"random": seed}
    if time_limit is not None:
        task_kwargs["time_limit"] = time_limit  # every suite task takes it
    return suite.load(domain, task, task_kwargs=task_kwargs)
