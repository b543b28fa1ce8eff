"""Courier calls that cannot outlive the program.

A Courier call to a node that has already exited waits forever. Every call between
nodes goes through `StoppableClient`: it uses a short call timeout, retries while
the program runs (the other node may still be starting or busy), and raises
`ProgramStopped` once the program is stopping. The timeout must stay well under
Launchpad's termination notice (10 s), or a node caught in a call at the stop is
killed instead of returning.
"""

import threading

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


class StoppableClient:
    def __init__(self, client, stop: threading.Event, call_timeout_s: float = 1.0):
        """`client` is a dereferenced Courier handle; only its address is used."""
        self._client = courier.Client(client.address, call_timeout=call_timeout_s)
        self._stop = stop

    def __getattr__(self, method: str):
        remote = getattr(self._client, method)

        def call(*args, **kwargs):
            while True:
                if self._stop.is_set():
                    raise ProgramStopped(f"{method}: the program is stopping")
                try:
                    return remote(*args, **kwargs)
                except Exception as error:  # Courier raises StatusNotOk with a status code
                    if self._stop.is_set():
                        raise ProgramStopped(f"{method}: the program is stopping") from error
                    if _status_code(error) not in _RETRIED_CODES:
                        raise

        return call
