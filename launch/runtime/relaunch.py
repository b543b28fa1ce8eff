"""Starting a lost supervisor again: the launchers' side of a lost host.

A node's supervisor restarts the node's process (`launch.runtime.supervisor`); when the
supervisor itself is lost (SIGKILLed, its ssh cut, every process of its host killed), the
launch that started it starts it again: the hosts launch one entry process
(`launch.runtime.hosts`), a SLURM job one `srun` step of a group (`launch.runtime.slurm`).
`Relaunches` decides whether it may, under the nodes' own restart policy, and has the
counter record it (restarts.jsonl, the summary, the progress line).
"""

import sys
import threading
import time
from typing import Callable, Dict, Optional

from launch.nodes import rpc
from launch.nodes.counter import saved_stop_reason
from launch.runtime import entry
from launch.runtime.supervisor import RestartBudget, RestartPolicy, describe_exit


class Relaunches:
    """Lost supervisors of one launch. `coordinator()`: the counter's address (None until known)."""

    def __init__(self, policy: RestartPolicy, launch_dir: str, coordinator: Callable[[], Optional[str]]):
        self._policy = policy
        self._launch_dir = launch_dir
        self._coordinator = coordinator
        self._budgets: Dict[str, RestartBudget] = {}  # what was lost ("actor/1", or a SLURM step's group) -> budget

    def allow(self, lost: str, counter_lost: bool) -> bool:
        """Whether `lost` may be started again now; spends its budget if so. Not while the
        program stops (as the counter says, or its saved state when the counter is among the lost)."""
        if self.stopping(counter_lost):
            return False
        now = time.time()
        budget = self._budgets.setdefault(lost, RestartBudget(self._policy))
        if not budget.allows(now):
            print(f"relay launcher: {lost}'s supervisor was lost {budget.used(now) + 1} times{budget.within()}, "
                  f"past its budget of {self._policy.describe()}", file=sys.stderr, flush=True)
            return False
        budget.spend(now)
        return True

    def stopping(self, counter_lost: bool) -> bool:
        """As the counter says; one that does not answer (restarting, or gone after the stop)
        by the state it last saved."""
        if not counter_lost:
            counter = rpc.final_client(self._coordinator(), call_timeout_s=2.0, tries=2)
            try:
                return bool(counter.stop_reason())
            except Exception:
                pass
        return saved_stop_reason(self._launch_dir) is not None

    def registered_address(self, node: str) -> Optional[str]:
        """Where `node` served, as it registered with the counter (None if it does not answer)."""
        counter = rpc.final_client(self._coordinator(), call_timeout_s=2.0, tries=1)
        return call_or_none(counter.lookup_address, node)

    def record(self, node: str, code: int, log: str, cause: Optional[str] = None) -> None:
        """Has the counter keep the relaunch (in a thread: a lost counter takes it once it is back).
        `cause`: what was lost, by default "its supervisor ended (<how>)"."""
        record = {"node": node, "cause": cause or f"its supervisor ended ({describe_exit(code)})", "exit_code": code,
                  "time": time.time(), "log": log, "restarted": True, "supervisor": True}
        threading.Thread(target=self._record, args=(record,), daemon=True, name="record-relaunch").start()

    def _record(self, record: dict, timeout_s: float = 60.0) -> None:
        counter = rpc.final_client(self._coordinator(), call_timeout_s=2.0, tries=1)
        try:  # as a supervisor reports a restart (launch.runtime.entry)
            entry.poll(lambda: counter.record_restart(record) or True, timeout_s, "")
        except TimeoutError:
            print(f"restart: node {record['node']}: {record['cause']}; started again (the counter did not take the "
                  "record)", flush=True)


def call_or_none(method, *args):
    """`method(*args)`, or None when the counter does not answer."""
    try:
        return method(*args)
    except Exception:
        return None
