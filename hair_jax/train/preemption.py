"""Stopping cleanly on SIGTERM/SIGINT or a cluster preemption notice."""

import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionGuard:
    """Turns SIGTERM/SIGINT into a flag the loop polls between steps.

    With several processes, SIGTERM is left to JAX's coordination service,
    and `reached_preemption_sync_point` makes all processes agree on the step
    to stop at (SIGINT then keeps its default, KeyboardInterrupt).
    """

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        # With several processes JAX's coordination service owns SIGTERM; a
        # Python handler would replace its notifier.
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        del frame
        self.signal = signal.Signals(signum).name
        # A second signal interrupts at once.
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def should_stop(self, step):
        if jax.process_count() > 1:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self.signal is not None
