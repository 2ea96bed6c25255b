"""The one place where codesign reaches past Optuna's public API.

Optuna 5 has no public call for these; each function says what it relies on, so an Optuna
upgrade that moves one breaks here and nowhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

# The system attribute optuna-dashboard 0.21 (and Optuna before 5.0) reads a trial's
# constraints from: a list of floats, in a fixed order. Optuna 5 reads it too
# (``optuna.study._constrained_optimization._get_constraints_from_system_attrs``, as
# constraints "0", "1", ...), so writing it alone gives samplers each value once.
LEGACY_CONSTRAINTS_KEY = "constraints"


def set_constraints(study: optuna.Study, trial: optuna.Trial, values: Sequence[float]) -> None:
    """Record a running trial's constraint values where both Optuna 5's samplers and
    optuna-dashboard read them (relies on ``Study._storage`` and ``Trial._trial_id``)."""
    study._storage.set_trial_system_attr(trial._trial_id, LEGACY_CONSTRAINTS_KEY,
                                         [float(v) for v in values])


def fail_stale(study: optuna.Study, trial: FrozenTrial, reason_key: str, reason: str) -> None:
    """Mark a trial another (dead) driver left RUNNING as FAIL, with a reason user attribute
    (relies on ``Study._storage`` and ``FrozenTrial._trial_id``: ``study.tell`` only takes
    trials of this process's ``ask``)."""
    study._storage.set_trial_user_attr(trial._trial_id, reason_key, reason)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def trial_count(storage: optuna.storages.BaseStorage, summary: Any) -> int:
    """Trials of a study listed by ``storage.get_all_studies()`` (relies on
    ``FrozenStudy._study_id``)."""
    return len(storage.get_all_trials(summary._study_id, deepcopy=False))


def live_trial(study: optuna.Study, trial: FrozenTrial) -> optuna.Trial:
    """A ``Trial`` handle of a stored trial, as optuna-dashboard's ``save_note`` takes one
    (relies on ``FrozenTrial._trial_id``)."""
    return optuna.Trial(study, trial._trial_id)


def set_params(study: optuna.Study, trial: optuna.Trial, params: dict[str, Any],
               distributions: dict[str, Any]) -> None:
    """Give a running trial parameters its sampler did not propose (the accelerator half a
    nested strategy solves): relies on ``Study._storage`` and ``Trial._trial_id``, as
    ``Trial.suggest_*`` would only ask the sampler."""
    for name, value in params.items():
        dist = distributions[name]
        study._storage.set_trial_param(trial._trial_id, name, dist.to_internal_repr(value),
                                       dist)


def new_trial(study: optuna.Study, user_attrs: dict[str, Any] | None = None) -> optuna.Trial:
    """A new RUNNING trial of ``study`` (with ``user_attrs``, in the same write) that takes
    no WAITING (enqueued) trial off the queue, as ``Study.ask`` would (relies on
    ``Study._storage`` and ``Study._study_id``)."""
    template = (None if not user_attrs else optuna.trial.create_trial(
        state=TrialState.RUNNING, user_attrs=user_attrs))
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.Trial(study, trial_id)


def add_complete(study: optuna.Study, *, params: dict[str, Any],
                 distributions: dict[str, Any], values: Sequence[float],
                 constraints: Sequence[float], user_attrs: dict[str, Any]) -> FrozenTrial:
    """Record a finished trial the driver evaluated itself (a nested strategy's further
    pairs), its constraints where ``set_constraints`` puts them, and return it as stored
    (``Study.add_trial``'s checks, then ``Study._storage`` and ``Study._study_id``, as
    ``add_trial`` returns nothing and reading the study back would read every trial)."""
    trial = optuna.trial.create_trial(
        params=params, distributions=distributions, values=[float(v) for v in values],
        user_attrs=user_attrs,
        system_attrs={LEGACY_CONSTRAINTS_KEY: [float(v) for v in constraints]})
    trial._validate()
    if len(study.directions) != len(values):
        raise ValueError(f"{len(values)} values for {len(study.directions)} objectives")
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=trial)
    return study._storage.get_trial(trial_id)


# ---------------------------------------------------------------- one write per trial
#
# Optuna's storages commit every ``set_trial_user_attr`` on its own: a result of twenty
# attributes is twenty transactions (each an fsync on SQLite), and a driver killed between
# two of them leaves a half-written trial. The functions below write what one step of a
# trial produces (its attributes, and at the end its state and values, and the release of
# its claims) as one transaction on an RDB storage (``_CachedStorage`` -> ``RDBStorage``
# and its ``_set_trial_attr_without_commit`` / ``_set_trial_value_without_commit``,
# ``optuna.storages._rdb.models``) and as one append of log lines on a journal storage
# (``JournalStorage._backend.append_logs``, ``_replay_result.worker_id``,
# ``_sync_with_backend``, ``JournalOperation``); any other storage gets the public calls
# one by one.

CLAIM_PREFIX = "codesign.claim:"


def _rdb(storage: Any) -> Any:
    """The ``RDBStorage`` behind ``storage`` (``_CachedStorage._backend``), or None."""
    from optuna.storages import RDBStorage

    inner = getattr(storage, "_backend", storage)
    return inner if isinstance(inner, RDBStorage) else None


def _journal(storage: Any) -> Any:
    from optuna.storages.journal import JournalStorage

    return storage if isinstance(storage, JournalStorage) else None


def write_trial(study: optuna.Study, trial_id: int, *, user_attrs: dict[str, Any],
                system_attrs: dict[str, Any] | None = None,
                state: TrialState | None = None, values: Sequence[float] | None = None,
                release: Sequence[str] = (),
                settle: dict[str, Any] | None = None) -> FrozenTrial | None:
    """Write a running trial's ``user_attrs`` and ``system_attrs``, and (``state``) finish
    it with ``values``, releasing the study claims named ``release`` (``claim``) and giving
    those of ``settle`` their final holder (claims that stay: the outcome they name is
    final), all or nothing.

    The sampler's ``after_trial`` is called first, as ``Study.tell`` does, with the trial as
    it will be stored.

    Returns:
        With ``state``: the trial as now stored; else None.
    """
    storage = study._storage
    system_attrs = system_attrs or {}
    frozen = None
    if state is not None:
        import copy
        from datetime import datetime

        study._thread_local.cached_all_trials = None
        frozen = copy.copy(storage.get_trial(trial_id))
        frozen.user_attrs = {**frozen.user_attrs, **user_attrs}
        frozen.system_attrs = {**frozen.system_attrs, **system_attrs}
        try:
            study.sampler.after_trial(study, frozen, state,
                                      None if values is None else list(values))
        except Exception:  # noqa: BLE001 - as Study.tell: the trial is stored whatever
            import logging

            logging.getLogger(__name__).warning("sampler.after_trial failed", exc_info=True)
        frozen.state = state
        frozen.values = None if values is None else [float(v) for v in values]
        frozen.datetime_complete = datetime.now() if state.is_finished() else None
    release = [CLAIM_PREFIX + n for n in release]
    settled = {CLAIM_PREFIX + n: h for n, h in (settle or {}).items()}
    rdb, journal = _rdb(storage), _journal(storage)
    if rdb is not None:
        _write_rdb(rdb, study._study_id, trial_id, user_attrs, system_attrs, state, values,
                   release, settled)
    elif journal is not None:
        _write_journal(journal, study._study_id, trial_id, user_attrs, system_attrs, state,
                       values, release, settled)
    else:
        for key, holder in settled.items():
            storage.set_study_system_attr(study._study_id, key, holder)
        for k, v in user_attrs.items():
            storage.set_trial_user_attr(trial_id, k, v)
        for k, v in system_attrs.items():
            storage.set_trial_system_attr(trial_id, k, v)
        if state is not None:
            storage.set_trial_state_values(trial_id, state,
                                           None if values is None else list(values))
        for key in release:
            storage.set_study_system_attr(study._study_id, key, None)
    return frozen


def _upsert(rdb: Any, session: Any, model_cls: Any, trial_id: int,
            attrs: dict[str, Any]) -> None:
    """Every attribute of ``attrs`` in one statement (PostgreSQL, SQLite), else one by one
    (``RDBStorage._set_trial_attr_without_commit``)."""
    import json
    import sqlite3

    if not attrs:
        return
    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
            for k, v in attrs.items()]
    name = rdb.engine.name
    if name == "postgresql" or (name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24)):
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(model_cls).values(rows)
        session.execute(stmt.on_conflict_do_update(
            index_elements=[model_cls.trial_id, model_cls.key],
            set_={"value_json": stmt.excluded.value_json}))
        return
    for k, v in attrs.items():
        rdb._set_trial_attr_without_commit(session, model_cls, trial_id, k, v)


def _write_rdb(rdb: Any, study_id: int, trial_id: int, user_attrs: dict[str, Any],
               system_attrs: dict[str, Any], state: TrialState | None,
               values: Sequence[float] | None, release: Sequence[str],
               settled: dict[str, Any]) -> None:
    import json
    from datetime import datetime

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session,
                                                      for_update=state is not None)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        _upsert(rdb, session, models.TrialUserAttributeModel, trial_id, user_attrs)
        _upsert(rdb, session, models.TrialSystemAttributeModel, trial_id, system_attrs)
        if state is not None:
            for objective, v in enumerate(values or ()):
                rdb._set_trial_value_without_commit(session, trial, objective, float(v))
            trial.state = state
            if state.is_finished():
                trial.datetime_complete = datetime.now()
        model = models.StudySystemAttributeModel
        if release:
            session.query(model).filter(
                model.study_id == study_id, model.key.in_(list(release)),
            ).delete(synchronize_session=False)
        for key, holder in settled.items():
            session.query(model).filter(model.study_id == study_id, model.key == key
                                        ).update({"value_json": json.dumps(holder)},
                                                 synchronize_session=False)


def _write_journal(journal: Any, study_id: int, trial_id: int, user_attrs: dict[str, Any],
                   system_attrs: dict[str, Any], state: TrialState | None,
                   values: Sequence[float] | None, release: Sequence[str],
                   settled: dict[str, Any]) -> None:
    from datetime import datetime, timezone

    from optuna.storages.journal._storage import JournalOperation as Op

    with journal._thread_lock:
        # a trial another driver finished meanwhile (it took this one's lapsed lease) is
        # refused before anything is appended, as the RDB transaction refuses it: a log of
        # this worker for a finished trial would stop this process's replay half-way
        journal._sync_with_backend()
        stored = journal._replay_result.get_trial(trial_id)
        if stored.state.is_finished():  # (``check_trial_is_updatable`` would take the lock)
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"Trial#{stored.number} has already finished and can not be updated.")
        wid = journal._replay_result.worker_id
        logs: list[dict[str, Any]] = [
            {"op_code": Op.SET_TRIAL_USER_ATTR, "worker_id": wid, "trial_id": trial_id,
             "user_attr": {k: v}} for k, v in user_attrs.items()]
        logs += [{"op_code": Op.SET_TRIAL_SYSTEM_ATTR, "worker_id": wid, "trial_id": trial_id,
                  "system_attr": {k: v}} for k, v in system_attrs.items()]
        if state is not None:
            log: dict[str, Any] = {"op_code": Op.SET_TRIAL_STATE_VALUES, "worker_id": wid,
                                   "trial_id": trial_id, "state": state,
                                   "values": None if values is None else list(values)}
            if state.is_finished():
                log["datetime_complete"] = datetime.now(tz=timezone.utc).isoformat(
                    timespec="microseconds")
            logs.append(log)
        logs += _study_attr_logs(wid, study_id, {key: None for key in release} | settled)
        if logs:
            journal._backend.append_logs(logs)
        journal._sync_with_backend()


# ---------------------------------------------------------------- claims
#
# A claim is a study system attribute ``codesign.claim:<name>`` whose value names its
# holder. Taking one is a compare-and-swap: on an RDB storage an INSERT that the table's
# unique (study_id, key) constraint refuses when the name is held, or an UPDATE conditioned
# on the stale holder's value; on a journal storage a read and an append made under one
# lock file beside the journal (``<journal>.codesign-claims.lock``), which every codesign
# driver takes; in memory a plain check (one process).


def claim(study: optuna.Study, name: str, holder: dict[str, Any],
          stale: Any) -> dict[str, Any] | None:
    """Take the claim ``name`` for ``holder`` (a JSON object). ``stale(current)`` says
    whether a current holder may be replaced (its trial finished, its driver dead).

    Returns:
        None when this caller now holds the claim, else the holder that keeps it.
    """
    key = CLAIM_PREFIX + name
    storage = study._storage
    rdb, journal = _rdb(storage), _journal(storage)
    if rdb is not None:
        return _claim_rdb(rdb, study._study_id, key, holder, stale)
    if journal is not None:
        return _claim_journal(journal, study._study_id, key, holder, stale)
    current = storage.get_study_system_attrs(study._study_id).get(key)
    if current is not None and not stale(current):
        return current
    storage.set_study_system_attr(study._study_id, key, holder)
    return None


def claim_many(study: optuna.Study, names: Sequence[str], holder: dict[str, Any], *,
               trial_id: int | None = None, user_attrs: dict[str, Any] | None = None
               ) -> set[str]:
    """Take every free claim of ``names`` for ``holder`` and write the running trial's
    ``user_attrs``, in one transaction on an RDB storage (``INSERT ... ON CONFLICT DO
    NOTHING``: a claim held by anyone, stale or not, is simply not taken; ``claim`` decides
    about those). Returns the names taken."""
    rdb, journal = _rdb(study._storage), _journal(study._storage)
    if journal is not None:
        return _claim_many_journal(journal, study._study_id, names, holder, trial_id,
                                   user_attrs or {})
    if rdb is None or rdb.engine.name not in ("sqlite", "postgresql"):
        if trial_id is not None and user_attrs:
            write_trial(study, trial_id, user_attrs=user_attrs)
        return {n for n in names if claim(study, n, holder, lambda h: False) is None}
    import json

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    if rdb.engine.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    table = models.StudySystemAttributeModel.__table__
    taken: set[str] = set()
    with _create_scoped_session(rdb.scoped_session) as session:
        if trial_id is not None and user_attrs:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            rdb.check_trial_is_updatable(trial_id, trial.state)
            _upsert(rdb, session, models.TrialUserAttributeModel, trial_id, user_attrs)
        encoded = json.dumps(holder)
        for name in names:
            # RETURNING, not rowcount: SQLAlchemy 2.1 with psycopg 3 reports an INSERT's
            # rowcount as -1, which would leave every claim untaken (and the driver waiting)
            done = session.execute(insert(table).values(
                study_id=study._study_id, key=CLAIM_PREFIX + name, value_json=encoded
            ).on_conflict_do_nothing(index_elements=[table.c.study_id, table.c.key]
                                     ).returning(table.c.key))
            if done.first() is not None:
                taken.add(name)
    return taken


def _claim_many_journal(journal: Any, study_id: int, names: Sequence[str],
                        holder: dict[str, Any], trial_id: int | None,
                        user_attrs: dict[str, Any]) -> set[str]:
    """``claim_many`` on a journal: under the claims lock, one read of the log and one
    append (the free claims and the trial's attributes)."""
    from optuna.storages.journal._storage import JournalOperation as Op

    with _claims_lock(journal):
        held = journal.get_study_system_attrs(study_id)  # syncs the log first
        taken = {n for n in names if held.get(CLAIM_PREFIX + n) is None}
        with journal._thread_lock:
            wid = journal._replay_result.worker_id
            logs = _study_attr_logs(wid, study_id,
                                    {CLAIM_PREFIX + n: holder for n in names if n in taken})
            if trial_id is not None:
                logs += [{"op_code": Op.SET_TRIAL_USER_ATTR, "worker_id": wid,
                          "trial_id": trial_id, "user_attr": {k: v}}
                         for k, v in user_attrs.items()]
            if logs:
                journal._backend.append_logs(logs)
            journal._sync_with_backend()
    return taken


def _study_attr_logs(wid: str, study_id: int, attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """Journal log lines setting study system attributes ``attrs`` (one per key)."""
    from optuna.storages.journal._storage import JournalOperation as Op

    return [{"op_code": Op.SET_STUDY_SYSTEM_ATTR, "worker_id": wid, "study_id": study_id,
             "system_attr": {k: v}} for k, v in attrs.items()]


def _claims_lock(journal: Any) -> Any:
    """The lock every codesign driver takes around a journal's claims (a file beside the
    journal: ``<journal>.codesign-claims.lock``), or no lock for another backend."""
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    backend = journal._backend
    if not isinstance(backend, JournalFileBackend):  # another backend: one driver assumed
        return contextlib.nullcontext()
    return get_lock_file(JournalFileSymlinkLock(backend._file_path + ".codesign-claims"))


def _claim_rdb(rdb: Any, study_id: int, key: str, holder: dict[str, Any],
               stale: Any) -> dict[str, Any] | None:
    import json

    import sqlalchemy
    from optuna.storages._rdb import models

    table = models.StudySystemAttributeModel.__table__
    encoded = json.dumps(holder)
    for _ in range(5):  # a holder may change between the refused insert and the read
        try:
            with rdb.engine.begin() as conn:
                conn.execute(table.insert().values(study_id=study_id, key=key,
                                                   value_json=encoded))
            return None
        except sqlalchemy.exc.IntegrityError:
            pass
        with rdb.engine.connect() as conn:
            row = conn.execute(sqlalchemy.select(table.c.value_json).where(
                table.c.study_id == study_id, table.c.key == key)).first()
        if row is None:
            continue  # released meanwhile: insert again
        current = json.loads(row[0])
        if current is not None and not stale(current):
            return current
        with rdb.engine.begin() as conn:
            done = conn.execute(table.update().where(
                table.c.study_id == study_id, table.c.key == key,
                table.c.value_json == row[0]).values(value_json=encoded))
        if done.rowcount == 1:
            return None
    return {"holder": "unknown (the claim changed hands too often)"}


def _claim_journal(journal: Any, study_id: int, key: str, holder: dict[str, Any],
                   stale: Any) -> dict[str, Any] | None:
    with _claims_lock(journal):
        current = journal.get_study_system_attrs(study_id).get(key)  # syncs the log first
        if current is not None and not stale(current):
            return current
        journal.set_study_system_attr(study_id, key, holder)
        return None


def claims(study: optuna.Study, prefix: str = "") -> dict[str, dict[str, Any]]:
    """The claims held in ``study`` whose names start with ``prefix``: name -> holder (on
    an RDB storage, only those rows are read)."""
    key = CLAIM_PREFIX + prefix
    rdb = _rdb(study._storage)
    if rdb is not None:
        import json

        import sqlalchemy
        from optuna.storages._rdb import models

        table = models.StudySystemAttributeModel.__table__
        like = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with rdb.engine.connect() as conn:
            rows = conn.execute(sqlalchemy.select(table.c.key, table.c.value_json).where(
                table.c.study_id == study._study_id,
                table.c.key.like(like, escape="\\"))).all()
        attrs = {k: json.loads(v) for k, v in rows}
    else:
        attrs = study._storage.get_study_system_attrs(study._study_id)
    return {k[len(CLAIM_PREFIX):]: v for k, v in attrs.items()
            if k.startswith(key) and v is not None}


def release(study: optuna.Study, names: Sequence[str],
            expect: dict[str, Any] | None = None) -> None:
    """Give up the claims ``names`` (held by this caller); with ``expect`` (name -> holder
    as read), only those whose holder is still that one (a compare-and-delete: a claim
    settled or taken over since the read stays)."""
    keys = [CLAIM_PREFIX + n for n in names]
    if not keys:
        return
    storage = study._storage
    rdb, journal = _rdb(storage), _journal(storage)
    if rdb is not None:
        import json

        from optuna.storages._rdb import models

        table = models.StudySystemAttributeModel.__table__
        with rdb.engine.begin() as conn:
            if expect is None:
                conn.execute(table.delete().where(table.c.study_id == study._study_id,
                                                  table.c.key.in_(keys)))
            else:
                for n in names:
                    conn.execute(table.delete().where(
                        table.c.study_id == study._study_id,
                        table.c.key == CLAIM_PREFIX + n,
                        table.c.value_json == json.dumps(expect[n])))
        return
    with _claims_lock(journal) if journal is not None else contextlib.nullcontext():
        current = storage.get_study_system_attrs(study._study_id)
        for n, key in zip(names, keys, strict=True):
            if expect is None or current.get(key) == expect[n]:
                storage.set_study_system_attr(study._study_id, key, None)


def read_trials(study: optuna.Study, user_keys: Collection[str], *,
                only: Sequence[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """The study's trials (``only``: those of an earlier call, again), in trial order, with
    the user attributes ``user_keys`` alone and the system attributes that hold constraint
    values (what ``FrozenTrial.constraints`` reads); no parameters, no intermediate values.
    For the read-only views, which need the small attributes of every trial and the large
    ones (the design, the per-layer costs) of a few: see :func:`full_trials`.

    On an RDB storage (SQLite, PostgreSQL, MySQL), one query per table for those columns
    only: the large attributes of other trials are never read or parsed. It relies on
    ``Study._storage``, ``_CachedStorage._backend``, ``RDBStorage.engine``, Optuna's table
    models (``optuna.storages._rdb.models``: their columns, the naive-UTC datetimes and
    ``TrialValueModel.stored_repr_to_value``) and ``FrozenTrial._trial_id``. States are read
    first, in their own query: a finished trial's values and attributes were written before
    its state (Optuna refuses to change a finished trial), so they are all there when the
    later queries run, whatever a driver writes meanwhile; a trial created after the first
    query is left out. Other storages (journal): ``study.get_trials(deepcopy=False)``, the
    attributes not asked for included."""
    rdb = _rdb(study._storage)
    if rdb is None:
        trials = study.get_trials(deepcopy=False)
        if only is not None:
            wanted = {t.number for t in only}
            trials = [t for t in trials if t.number in wanted]
        return trials
    ids = None if only is None else [t._trial_id for t in only]
    return _read_rdb(rdb, study._study_id, list(user_keys), ids)


def _read_rdb(rdb: Any, study_id: int, user_keys: list[str],
              only: list[int] | None) -> list[FrozenTrial]:
    """:func:`read_trials` on an RDB storage (``only``: trial ids)."""
    import json

    import sqlalchemy as sa
    from optuna.storages._rdb import models

    tm, vm = models.TrialModel, models.TrialValueModel
    um, sm = models.TrialUserAttributeModel, models.TrialSystemAttributeModel
    finite = vm.TrialValueType.FINITE
    head: dict[int, tuple[Any, ...]] = {}
    values: dict[int, dict[int, float]] = {}
    user: dict[int, dict[str, Any]] = {}
    system: dict[int, dict[str, Any]] = {}
    known: dict[str, tuple[Any, bool]] = {}  # JSON text -> (value, a flat list)

    def parsed(text: str) -> Any:  # many trials hold the same small values: parsed once
        hit = known.get(text)
        if hit is None:
            value = json.loads(text)
            if isinstance(value, dict) or (isinstance(value, list) and any(
                    isinstance(v, (list, dict)) for v in value)):
                return value  # nested: parsed for each trial, never shared
            hit = known[text] = (value, isinstance(value, list))
        value, is_list = hit
        return list(value) if is_list else value  # a list of its own for each trial

    with rdb.engine.connect() as con:
        for ids in _chunks(only):
            query = sa.select(tm.trial_id, tm.number, tm.state, tm._datetime_start_utc,
                              tm._datetime_complete_utc).where(tm.study_id == study_id)
            if ids is not None:
                query = query.where(tm.trial_id.in_(ids))
            for tid, *rest in con.execute(query).all():
                head[tid] = tuple(rest)
                values[tid], user[tid], system[tid] = {}, {}, {}
            if not head:
                continue
            # the trials' rows: of this study (a subquery), or of these ids
            mine = (sa.select(tm.trial_id).where(tm.study_id == study_id) if ids is None
                    else ids)
            for tid, objective, value, kind in con.execute(
                    sa.select(vm.trial_id, vm.objective, vm.value, vm.value_type)
                    .where(vm.trial_id.in_(mine))).all():
                if tid in values:
                    values[tid][objective] = (value if kind == finite else
                                              vm.stored_repr_to_value(value, kind))
            if user_keys:
                for tid, key, text in con.execute(
                        sa.select(um.trial_id, um.key, um.value_json)
                        .where(um.trial_id.in_(mine), um.key.in_(user_keys))).all():
                    if tid in user:
                        user[tid][key] = parsed(text)
            for tid, key, text in con.execute(
                    sa.select(sm.trial_id, sm.key, sm.value_json)
                    .where(sm.trial_id.in_(mine),
                           sa.or_(sm.key == LEGACY_CONSTRAINTS_KEY,
                                  sm.key.like(LEGACY_CONSTRAINTS_KEY + ":%")))).all():
                if tid in system:
                    system[tid][key] = parsed(text)
    out = []
    for tid in sorted(head):
        number, state, start, complete = head[tid]
        vals = values[tid]
        out.append(FrozenTrial(
            number=number, state=state, value=None,
            values=[vals[k] for k in sorted(vals)] if vals and state.is_finished() else None,
            datetime_start=_local(start), datetime_complete=_local(complete), params={},
            distributions={}, user_attrs=user[tid], system_attrs=system[tid],
            intermediate_values={}, trial_id=tid))
    return out


def full_trials(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """``trials`` (of :func:`read_trials`) with everything Optuna stores of them, as
    ``study.get_trials`` gives them. On an RDB storage in one query per table (Optuna's own
    query of ``RDBStorage._get_trials``, for these trials only, and its
    ``RDBStorage._build_frozen_trial_from_trial_model``); else ``Study._storage.get_trial``
    for each. Both rely on ``FrozenTrial._trial_id``."""
    rdb = _rdb(study._storage)
    if rdb is None:
        return [study._storage.get_trial(t._trial_id) for t in trials]
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy.orm import selectinload

    tm = models.TrialModel
    built: dict[int, FrozenTrial] = {}
    with _create_scoped_session(rdb.scoped_session) as session:
        for ids in _chunks([t._trial_id for t in trials]):
            query = (session.query(tm)
                     .options(selectinload(tm.params), selectinload(tm.values),
                              selectinload(tm.user_attributes),
                              selectinload(tm.system_attributes),
                              selectinload(tm.intermediate_values))
                     .filter(tm.trial_id.in_(ids)))
            for model in query.all():
                built[model.trial_id] = rdb._build_frozen_trial_from_trial_model(model)
    return [built[t._trial_id] for t in trials]


def _chunks(ids: list[int] | None, size: int = 500) -> list[list[int] | None]:
    """``[None]`` (every trial), else ``ids`` in pieces a SQL ``IN`` takes on any database."""
    if ids is None:
        return [None]
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _local(utc: Any) -> Any:
    """A naive UTC datetime as stored -> naive local time, as ``TrialModel`` returns it."""
    if utc is None:
        return None
    import datetime

    return utc.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)


def ask_as(study: optuna.Study, distributions: dict[str, Any],
           user_attrs: dict[str, Any]) -> optuna.Trial:
    """``Study.ask(distributions)`` for a trial that carries ``user_attrs`` (its driver)
    from the moment it exists: a re-queued (WAITING) trial first, as ``ask`` takes, its
    attributes written at once; else a new RUNNING trial created with them in one write
    (``Study._pop_waiting_trial_id``, ``Study._thread_local``, ``Trial._suggest``,
    ``Trial.storage``, ``BaseStorage.create_new_trial(template_trial=...)``). Its
    parameters are stored together, in one write (``_write_params``)."""
    study._thread_local.cached_all_trials = None
    trial_id = study._pop_waiting_trial_id()
    if trial_id is None:
        template = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=user_attrs)
        trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    else:
        write_trial(study, trial_id, user_attrs=user_attrs)
    trial = optuna.Trial(study, trial_id)
    deferred = _DeferredParams(study._storage)
    trial.storage = deferred  # the sampler proposes every value first; stored in one write
    try:
        for name, dist in distributions.items():
            trial._suggest(name, dist)
    finally:
        trial.storage = study._storage
    _write_params(study, trial_id, deferred.params)
    return trial


def _write_params_rdb(rdb: Any, trial_id: int, params: Sequence[tuple[str, float, Any]]
                      ) -> None:
    """``_write_params`` on an RDB storage: each distribution checked against the one the
    study first stored for that name, as ``RDBStorage.set_trial_param`` does, with one
    query for all names, then one insert (``set_trial_param`` takes two queries and a
    commit per parameter: ~5 ms each on PostgreSQL)."""
    from optuna import distributions as d
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy import func

    P, T = models.TrialParamModel, models.TrialModel
    with _create_scoped_session(rdb.scoped_session) as session:
        trial = T.find_or_raise_by_id(trial_id, session, for_update=True)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        names = [name for name, _, _ in params]
        first = (session.query(func.min(P.param_id)).join(T)
                 .filter(T.study_id == trial.study_id, P.param_name.in_(names))
                 .group_by(P.param_name))
        before = {name: d.json_to_distribution(text) for name, text in
                  session.query(P.param_name, P.distribution_json)
                  .filter(P.param_id.in_(first.scalar_subquery()))}
        for name, _, dist in params:
            if name in before:
                d.check_distribution_compatibility(before[name], dist)
        session.add_all([P(trial_id=trial_id, param_name=name, param_value=internal,
                           distribution_json=d.distribution_to_json(dist))
                         for name, internal, dist in params])


class _DeferredParams:
    """A storage that keeps the parameters ``Trial._suggest`` sets (and passes every other
    call through): what lets ``ask_as`` store a trial's parameters in one write in place
    of one per parameter (19 SQLite commits per trial for the quickstart's space)."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.params: list[tuple[str, float, Any]] = []

    def set_trial_param(self, trial_id: int, name: str, internal: float, dist: Any) -> None:
        self.params.append((name, internal, dist))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def _write_params(study: optuna.Study, trial_id: int,
                  params: Sequence[tuple[str, float, Any]]) -> None:
    """Store a running trial's parameters (name, internal value, distribution) at once: one
    transaction on an RDB storage, one append on a journal; else one call each."""
    if not params:
        return
    storage = study._storage
    rdb, journal = _rdb(storage), _journal(storage)
    if rdb is not None:
        _write_params_rdb(rdb, trial_id, params)
    elif journal is not None:
        from optuna.distributions import distribution_to_json
        from optuna.storages.journal._storage import JournalOperation as Op

        with journal._thread_lock:
            wid = journal._replay_result.worker_id
            journal._backend.append_logs([
                {"op_code": Op.SET_TRIAL_PARAM, "worker_id": wid, "trial_id": trial_id,
                 "param_name": name, "param_value_internal": internal,
                 "distribution": distribution_to_json(dist)} for name, internal, dist in params])
            journal._sync_with_backend()
    else:
        for name, internal, dist in params:
            storage.set_trial_param(trial_id, name, internal, dist)
