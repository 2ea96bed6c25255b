"""What the driver starts, defers, tells as a repeat, retries or fails: pure bookkeeping.

The scheduler holds no Ray handle and no storage: it is given *jobs* (anything with a
design key ``dkey``, a training key ``key``, a cache hit ``hit`` or None, and an
``attempt`` count) and answers with *actions* for the session to carry out:

- ``Action("dispatch", job)``: evaluate it now;
- ``Action("repeat", job, first)``: its design has a final outcome ``first``: tell it so;
- ``Action("fail", job, reason)``: fail it for good without evaluating (its network's
  training failed deterministically before).

A job waits (no action) when its design is being evaluated by another job, when its
network is being trained for another job (it then reuses that training), or when another
driver of the same study holds the claim on its design or its network (``claim_design`` /
``claim_training`` say whether this driver got it; ``poll`` looks again). Every waiting job
counts as in flight: ``room()`` is what ``workers`` leaves for new ones.

Lifecycle: one per driver session. ``admit`` a new job; ``returned(job)`` when its
evaluation came back; then exactly one of ``ended(job, final=...)`` (its outcome is told)
or a new dispatch from ``retry(job)``; ``poll()`` whenever the study may have news from
other drivers. ``known`` is seeded with the study's final outcomes and kept up to date by
``ended`` and by the session (``learn``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Action:
    kind: Literal["dispatch", "repeat", "fail"]
    job: Any
    detail: Any = None  # repeat: the first outcome; fail: the reason


def _yes(job: Any) -> bool:
    return True


@dataclass
class Scheduler:
    """See the module docstring. ``within_budgets(job)``: whether the job's design meets
    the budgets (a design over them is priced, never trained, so a network that failed
    training before may still be priced); ``hit_for(key)``: the study's finished training
    of ``key``, or None."""

    workers: int
    max_retries: int
    hit_for: Callable[[str], Any]
    within_budgets: Callable[[Any], bool] = _yes
    claim_design: Callable[[Any], bool] = _yes
    claim_training: Callable[[Any], bool] = _yes
    known: dict[str, Any] = field(default_factory=dict)  # design key -> final outcome
    evaluating: dict[str, list[Any]] = field(default_factory=dict)  # dkey -> its repeats
    training_now: dict[str, Any] = field(default_factory=dict)  # network -> job training it
    deferred: dict[str, list[Any]] = field(default_factory=dict)  # key -> waiting jobs
    diverged: dict[str, str] = field(default_factory=dict)  # key -> where and why
    foreign_design: list[Any] = field(default_factory=list)  # another driver's design
    foreign_training: list[Any] = field(default_factory=list)  # another driver's network
    running: int = 0  # dispatched and not returned

    # ------------------------------------------------------------ counts

    def waiting(self) -> int:
        return (sum(map(len, self.deferred.values())) + sum(map(len, self.evaluating.values()))
                + len(self.foreign_design) + len(self.foreign_training))

    def busy(self) -> int:
        """Jobs in flight: running, or waiting for a training, a design or a claim."""
        return self.running + self.waiting()

    def room(self) -> int:
        return self.workers - self.busy()

    def designs_in_flight(self, counts: Callable[[str], bool] = lambda dkey: True) -> int:
        """Distinct designs being evaluated here or waiting for another driver (``counts``
        filters design keys)."""
        keys = set(self.evaluating) | {j.dkey for j in self.foreign_design}
        return sum(counts(k) for k in keys)

    def idle(self) -> bool:
        return self.busy() == 0

    # ------------------------------------------------------------ admission

    def admit(self, job: Any) -> list[Action]:
        """A new job: a repeat of a known design, a wait for one in flight, or ``start``."""
        dkey = job.dkey
        if dkey in self.known:
            return [Action("repeat", job, self.known[dkey])]
        if dkey in self.evaluating:
            self.evaluating[dkey].append(job)
            return []
        if not self.claim_design(job):
            self.foreign_design.append(job)
            return []
        self.evaluating[dkey] = []
        return self.start(job)

    def start(self, job: Any) -> list[Action]:
        """Dispatch ``job`` (its design is claimed), or make it wait for its network."""
        if job.hit is None and job.key in self.diverged and self.within_budgets(job):
            return [Action("fail", job, f"not trained: the same network failed in "
                                        f"{self.diverged[job.key]}")]
        if job.hit is None:
            if job.key in self.training_now:
                self.deferred.setdefault(job.key, []).append(job)
                return []
            if not self.claim_training(job):
                self.foreign_training.append(job)
                return []
            self.training_now[job.key] = job
        self.running += 1
        return [Action("dispatch", job)]

    # ------------------------------------------------------------ results

    def returned(self, job: Any) -> None:
        """``job``'s evaluation came back (whatever its outcome)."""
        self.running -= 1

    def retry(self, job: Any) -> list[Action]:
        """Dispatch a crashed evaluation again, if it has retries left (else nothing: the
        session fails it and calls ``ended``)."""
        if job.attempt >= self.max_retries:
            return []
        job.attempt += 1
        self.running += 1
        return [Action("dispatch", job)]

    def ended(self, job: Any, outcome: Any, *, final: bool) -> list[Action]:
        """``job`` was told ``outcome``; ``final``: another evaluation of its design would
        end the same way (finished, unmappable, or failed for a deterministic reason).
        Starts what waited for its training and its design."""
        actions: list[Action] = []
        if self.training_now.get(job.key) is job:
            del self.training_now[job.key]
            for q in self.deferred.pop(job.key, []):
                q.hit = self.hit_for(job.key)
                actions += self.start(q)
        waiting = self.evaluating.pop(job.dkey, [])
        if final:
            self.known[job.dkey] = outcome
            actions += [Action("repeat", q, outcome) for q in waiting]
        else:  # a crash: the design may well run the next time; its claims went with it,
            for q in waiting:  # so its repeats are admitted anew (the first claims it)
                q.hit = self.hit_for(q.key)
                actions += self.admit(q)
        return actions

    def failed_training(self, job: Any, where: str) -> None:
        """``job``'s training failed deterministically (a diverging loss): its network is
        not trained again."""
        self.diverged[job.key] = where

    def learn(self, dkey: str, outcome: Any) -> None:
        """A final outcome of design ``dkey`` found in the study (another driver's)."""
        self.known.setdefault(dkey, outcome)

    def poll(self) -> list[Action]:
        """Look again at the jobs waiting for another driver: a design now known is a
        repeat; a network now trained is a cache hit; a claim given up is taken."""
        actions: list[Action] = []
        designs, self.foreign_design = self.foreign_design, []
        for job in designs:
            actions += self.admit(job)
        networks, self.foreign_training = self.foreign_training, []
        for job in networks:
            job.hit = self.hit_for(job.key)
            actions += self.start(job)
        return actions

    def drain(self) -> list[Any]:
        """Every job not finished (the session fails them on a stop), forgotten here."""
        jobs = [q for qs in self.deferred.values() for q in qs]
        jobs += [q for qs in self.evaluating.values() for q in qs]
        jobs += self.foreign_design + self.foreign_training
        self.deferred.clear()
        self.evaluating.clear()
        self.foreign_design.clear()
        self.foreign_training.clear()
        return jobs
