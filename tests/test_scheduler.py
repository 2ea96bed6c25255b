"""The driver's scheduler, alone: no Ray, no storage (codesign.driver.scheduler)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from codesign.driver.scheduler import Scheduler


@dataclass
class Job:
    dkey: str
    key: str
    hit: Any = None
    attempt: int = 0


def kinds(actions: list) -> list[tuple[str, str]]:
    return [(a.kind, a.job.dkey) for a in actions]


def make(**kw: Any) -> tuple[Scheduler, dict[str, Any]]:
    cache: dict[str, Any] = {}
    return Scheduler(workers=kw.pop("workers", 4), max_retries=kw.pop("max_retries", 1),
                     hit_for=cache.get, **kw), cache


def test_a_new_design_is_dispatched_and_counts_as_running() -> None:
    s, _ = make()
    assert kinds(s.admit(Job("d1", "n1"))) == [("dispatch", "d1")]
    assert (s.running, s.busy(), s.room()) == (1, 1, 3)


def test_a_design_in_flight_waits_and_is_told_its_outcome_as_a_repeat() -> None:
    s, _ = make()
    first, second = Job("d1", "n1"), Job("d1", "n1")
    s.admit(first)
    assert s.admit(second) == []
    assert s.busy() == 2  # the waiting repeat counts against workers
    s.returned(first)
    actions = s.ended(first, "told-1", final=True)
    assert [(a.kind, a.job, a.detail) for a in actions] == [("repeat", second, "told-1")]
    assert s.known["d1"] == "told-1" and s.idle()
    assert kinds(s.admit(Job("d1", "n1"))) == [("repeat", "d1")]  # known from now on


def test_a_network_in_training_is_trained_once() -> None:
    s, cache = make()
    a, b = Job("d1", "n1"), Job("d2", "n1")  # two accelerators, one network
    s.admit(a)
    assert s.admit(b) == [] and s.deferred == {"n1": [b]}
    s.returned(a)
    cache["n1"] = "trained"
    actions = s.ended(a, "told", final=True)
    assert kinds(actions) == [("dispatch", "d2")] and b.hit == "trained"
    assert "n1" not in s.training_now  # b reuses the training: it holds none


def test_after_a_crash_the_first_waiting_repeat_evaluates_the_design() -> None:
    s, _ = make()
    a, b, c = Job("d1", "n1"), Job("d1", "n1"), Job("d1", "n1")
    s.admit(a), s.admit(b), s.admit(c)
    s.returned(a)
    assert kinds(s.ended(a, "failed", final=False)) == [("dispatch", "d1")]
    assert "d1" not in s.known and s.evaluating["d1"] == [c]


def test_retries_are_bounded() -> None:
    s, _ = make(max_retries=2)
    job = Job("d1", "n1")
    s.admit(job)
    for _ in range(2):
        s.returned(job)
        assert kinds(s.retry(job)) == [("dispatch", "d1")]
    s.returned(job)
    assert s.retry(job) == [] and job.attempt == 2


def test_a_network_that_diverged_is_not_trained_again_unless_over_budget() -> None:
    over = set()
    s, _ = make(within_budgets=lambda j: j.dkey not in over)
    s.failed_training(Job("d0", "n1"), "trial 0 (loss is NaN)")
    assert [a.kind for a in s.admit(Job("d1", "n1"))] == ["fail"]
    over.add("d2")  # over budget: priced, never trained, so dispatched
    assert kinds(s.admit(Job("d2", "n1"))) == [("dispatch", "d2")]


def test_another_drivers_design_waits_then_is_a_repeat() -> None:
    held = {"d1"}
    s, _ = make(claim_design=lambda j: j.dkey not in held)
    job = Job("d1", "n1")
    assert s.admit(job) == [] and s.busy() == 1 and s.designs_in_flight() == 1
    assert s.poll() == []  # still held, still unknown
    s.learn("d1", "their trial")
    assert [(a.kind, a.detail) for a in s.poll()] == [("repeat", "their trial")]
    assert s.idle()


def test_another_drivers_network_waits_then_is_a_cache_hit() -> None:
    held = {"n1"}
    s, cache = make(claim_training=lambda j: j.key not in held)
    job = Job("d1", "n1")
    assert s.admit(job) == [] and s.foreign_training == [job]
    cache["n1"] = "their training"
    assert kinds(s.poll()) == [("dispatch", "d1")] and job.hit == "their training"


def test_a_claim_given_up_is_taken() -> None:
    held = {"n1"}
    s, _ = make(claim_training=lambda j: j.key not in held)
    job = Job("d1", "n1")
    s.admit(job)
    held.clear()  # the other driver died: its claim is stale
    assert kinds(s.poll()) == [("dispatch", "d1")] and s.training_now == {"n1": job}


def test_drain_returns_every_waiting_job_once() -> None:
    s, _ = make(claim_design=lambda j: j.dkey != "d9")
    jobs = [Job("d1", "n1"), Job("d1", "n1"), Job("d2", "n1"), Job("d9", "n2")]
    for j in jobs:
        s.admit(j)
    drained = s.drain()
    assert sorted(map(id, drained)) == sorted(map(id, jobs[1:]))
    assert s.waiting() == 0
