"""A node's loop in a worker thread, so that its main thread stays free for the stop signal."""

import threading
import time

# At a stop a node's loop gets this long to return; then the node returns without it.
_ABANDON_AFTER_S = 6.0


def run_off_main_thread(loop, name: str, stop: threading.Event = None) -> None:
    """Runs `loop` in a worker thread and waits for it, keeping this thread free for signals.

    Python runs signal handlers only on the main thread, between bytecodes. A node whose
    main thread is blocked in a C++ call (a Reverb insert held by the rate limiter) never
    sees SIGTERM, so the stop handler that would unblock it never runs. A loop still in a
    call no stop handler reaches (a restarted actor still connecting its writer) `_ABANDON_AFTER_S`
    after `stop` is left behind: the node returns, rather than be killed with its process.
    """
    errors = []

    def target():
        try:
            loop()
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    stopped_at = None
    while thread.is_alive():
        thread.join(0.1)
        if stop is not None and stop.is_set():
            stopped_at = stopped_at or time.time()
            if time.time() - stopped_at > _ABANDON_AFTER_S:
                print(f"{name}: still busy {_ABANDON_AFTER_S:.0f} s after the stop; left behind", flush=True)
                return
    if errors:
        raise errors[0]
