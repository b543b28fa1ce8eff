"""Courier calls that cannot outlive the program.

A Courier call to a node that has already exited waits forever. Every call between
nodes goes through `StoppableClient`: it uses a short call timeout, retries while
the program runs (the other node may still be starting or busy), and raises
`ProgramStopped` once the program is stopping. The calls a node makes at its stop
(`final_client`) take a few tries instead. The timeout must stay well under
Launchpad's termination notice (10 s), or a node caught in a call at the stop is
killed instead of returning.
"""

import threading
from typing import Optional

import courier

# StatusCode values of a timed-out call and of a server that is not (yet) there.
_RETRIED_CODES = (4, 14)  # DEADLINE_EXCEEDED, UNAVAILABLE


class ProgramStopped(Exception):
    """A call was abandoned because the program is stopping."""


def _status_code(error: Exception):
    code = getattr(error, "code", None)
    try:
        return int(code() if callable(code) else code)
    except (TypeError, ValueError):
        return None


def unavailable(error: Exception) -> bool:
    """Whether a call failed because the other node did not answer in time or is not there."""
    return _status_code(error) in _RETRIED_CODES


class StoppableClient:
    """Calls to a Courier node, retried while it is busy or not (yet) there.

    `target`: a dereferenced Courier handle (only its address is used) or a host:port.
    `stop`: calls are abandoned, with `ProgramStopped`, once it is set; None: never.
    `tries`: at most this many attempts a call (the last error is raised); None: no limit.
    """

    def __init__(self, target, stop: Optional[threading.Event] = None, call_timeout_s: float = 1.0,
                 tries: Optional[int] = None):
        self.address = getattr(target, "address", target)
        self._client = courier.Client(self.address, call_timeout=call_timeout_s)
        self._stop = stop
        self._tries = tries

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def __getattr__(self, method: str):
        remote = getattr(self._client, method)

        def call(*args, **kwargs):
            attempt = 0
            while True:
                if self._stopping():
                    raise ProgramStopped(f"{method}: the program is stopping")
                attempt += 1
                try:
                    return remote(*args, **kwargs)
                except Exception as error:  # Courier raises StatusNotOk with a status code
                    if self._stopping():
                        raise ProgramStopped(f"{method}: the program is stopping") from error
                    if _status_code(error) not in _RETRIED_CODES or (self._tries is not None and attempt >= self._tries):
                        raise

        return call


def final_client(target, call_timeout_s: float = 1.0, tries: int = 3) -> StoppableClient:
    """A client for the calls a node makes at its stop, when its stop event is already set."""
    return StoppableClient(target, None, call_timeout_s, tries)


def ask_to_stop(counter_address: Optional[str], reason: str) -> bool:
    """Asks the counter at `counter_address` to stop the program with `reason` (the first reason
    stays); False if there is no address yet or the counter does not answer (three tries)."""
    if counter_address is None:
        return False
    try:
        final_client(counter_address, call_timeout_s=2.0).request_stop(reason)
        return True
    except Exception:  # gone, or not up
        return False
