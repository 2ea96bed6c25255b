"""A driver's lease on its study: what tells the drivers of one study, on other hosts, that a
driver is gone.

On its own host a driver is known dead when its process is (``runner._alive`` checks the
pid). Drivers on other hosts cannot see that, so each live driver keeps a *beat* in the
study: the study claim ``beat:<host:pid>`` (``optuna_adapter.claim``), holding the wall-clock
time (Unix seconds) of its latest renewal and the lease it promises. A background thread
renews it every quarter of the lease, so a driver busy in a long in-process training keeps
it. A driver whose beat is older than its lease is taken for dead: other drivers fail its
RUNNING trials, re-queue their designs and take over its claims.

Drivers compare their own clock with the beat's, so the hosts' clocks must agree to well
within the lease (NTP does; the default lease is 60 s). A driver whose beat is missing (an
older codesign, which wrote none) is never taken for dead from another host.

Lifecycle: ``Heartbeat(study, driver, lease_s)`` -> ``start()`` (writes the first beat
before it returns) -> ... -> ``stop()`` (ends the thread and removes the beat).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import optuna

from codesign.optuna_adapter import claim, claims, release

log = logging.getLogger(__name__)

BEAT_PREFIX = "beat:"


def beats(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """The study's beats, driver -> ``{"t": unix_s, "lease_s": s}``."""
    return {name[len(BEAT_PREFIX):]: h for name, h in claims(study, BEAT_PREFIX).items()}


def lapsed(beat: dict[str, Any] | None, now_s: float | None = None) -> bool:
    """Whether a beat is older than the lease it promised (None: no beat, not lapsed)."""
    if not beat:
        return False
    now_s = time.time() if now_s is None else now_s
    try:
        return now_s - float(beat["t"]) > float(beat["lease_s"])
    except (KeyError, TypeError, ValueError):
        return False


@dataclass
class Heartbeat:
    """Keeps ``driver``'s beat in ``study`` fresh from a daemon thread (see the module)."""

    study: optuna.Study
    driver: str
    lease_s: float  # ``execution.lease_s``
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    @property
    def name(self) -> str:
        return BEAT_PREFIX + self.driver

    def beat(self) -> None:
        """Renew the beat now (the claim is this driver's whatever it held)."""
        me = self.driver
        holder = {"driver": me, "t": time.time(), "lease_s": float(self.lease_s)}
        claim(self.study, self.name, holder, lambda h: h.get("driver") == me)

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="codesign-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        warned = False
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.beat()
                warned = False
            except Exception:  # noqa: BLE001 - the storage may be down a moment; retried
                if not warned:
                    log.warning("could not renew this driver's lease in the study "
                                "(retrying every %.0f s)", self.lease_s / 4, exc_info=True)
                warned = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            release(self.study, [self.name])
        except Exception:  # noqa: BLE001 - a lapsed beat of a finished driver harms none
            log.debug("could not remove this driver's beat", exc_info=True)
