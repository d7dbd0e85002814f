"""The checkpoint writes on PostgreSQL as PL/pgSQL functions: each call of the contract
that writes is one statement, so one round trip, where a transaction of the same statements
took one per statement (BEGIN, the lock, the writes, COMMIT). `sql_traces.schema` creates
the functions with the tables; SQLite, in-process, keeps the statements of `sql_store`.

A function makes the checks of `sql_store`'s method of the same name, in the same order,
under the same lock: the trace's row, taken `FOR UPDATE` (`rc_live`) or by an UPDATE whose
WHERE is the checks, before anything else; it touches that trace's rows only. A statement
is atomic on its own, and a refusal comes before any change, so a refused call changes
nothing. Times are the caller's clock (`p_now`, ms), or the trace's last write if later
(that writer held the lock before this one), as `sql_store` reads the clock under the lock.
"""

from __future__ import annotations

import functools
from typing import Any

from .errors import TREE, CircuitMismatch, TraceCompleted, TraceNotFound
from .sql import Database

_LIVE = """
-- rc_live: the trace's row, locked FOR UPDATE; NULL if it is absent, or expired at the time
-- of this write (p_now, or the trace's last write if later). An expired trace's rows go if
-- p_remove (the caller replaces it).
CREATE OR REPLACE FUNCTION rc_live(p_trace TEXT, p_now BIGINT, p_remove BOOLEAN)
RETURNS rc_traces LANGUAGE plpgsql AS $$
DECLARE
  t rc_traces;
BEGIN
  SELECT * INTO t FROM rc_traces WHERE trace_id = p_trace FOR UPDATE;
  IF t.expires_ms <= GREATEST(p_now, t.updated_ms) THEN
    IF p_remove THEN
      DELETE FROM rc_envelopes WHERE trace_id = p_trace;
      DELETE FROM rc_interventions WHERE trace_id = p_trace;
      DELETE FROM rc_idempotency WHERE trace_id = p_trace;
      DELETE FROM rc_traces WHERE trace_id = p_trace;
    END IF;
    RETURN NULL;
  END IF;
  RETURN t;
END $$"""

_REPLAYED = """
-- rc_replayed: whether idempotency key p_key (NULL: none) was applied to the trace after
-- p_horizon (ms).
CREATE OR REPLACE FUNCTION rc_replayed(p_trace TEXT, p_key TEXT, p_horizon BIGINT)
RETURNS BOOLEAN LANGUAGE sql AS $$
  SELECT p_key IS NOT NULL AND EXISTS (SELECT 1 FROM rc_idempotency
    WHERE trace_id = p_trace AND idem_key = p_key AND at_ms > p_horizon)
$$"""

_REMEMBER = """
-- rc_remember: record idempotency key p_key as applied at p_now; the trace's keys older
-- than p_window (ms) go.
CREATE OR REPLACE FUNCTION rc_remember(p_trace TEXT, p_key TEXT, p_now BIGINT,
  p_window BIGINT) RETURNS VOID LANGUAGE sql AS $$
  DELETE FROM rc_idempotency WHERE trace_id = p_trace AND at_ms <= p_now - p_window;
  INSERT INTO rc_idempotency (trace_id, idem_key, at_ms) VALUES (p_trace, p_key, p_now)
    ON CONFLICT (trace_id, idem_key) DO UPDATE SET at_ms = excluded.at_ms;
$$"""

_APPEND = """
-- rc_append: append envelopes to one trace (append, append_many), creating it if absent
-- and replacing it if expired.
-- p_trace, p_circuit, p_version: the trace, and the batch's circuit and schematic version
-- p_blobs: the envelopes' codec bytes in append order, at ordinals n_events + 1, + 2, ...
-- p_key: the idempotency key or NULL   p_now: ms   p_ttl: ms, NULL: kept   p_window: ms
-- Returns ('ok', NULL) applied or replayed, ('mismatch', <the trace's circuit>),
-- ('completed', NULL), or ('deleted', NULL): deleted each time it was created.
CREATE OR REPLACE FUNCTION rc_append(p_trace TEXT, p_circuit TEXT, p_version TEXT,
  p_blobs BYTEA[], p_key TEXT, p_now BIGINT, p_ttl BIGINT, p_window BIGINT,
  OUT status TEXT, OUT detail TEXT) LANGUAGE plpgsql AS $$
DECLARE
  t rc_traces;
  v_first BIGINT;
  v_now BIGINT;
BEGIN
  FOR turn IN 1..2 LOOP
    IF p_key IS NULL OR turn = 2 THEN
      -- The WHERE is the checks below, made by the UPDATE once it holds the row's lock: an
      -- open, live trace of this circuit is extended at once, in the common case.
      UPDATE rc_traces SET updated_ms = GREATEST(p_now, updated_ms), version = p_version,
        expires_ms = GREATEST(p_now, updated_ms) + p_ttl,
        n_events = n_events + cardinality(p_blobs)
        WHERE trace_id = p_trace AND circuit = p_circuit AND completion IS NULL
          AND (expires_ms IS NULL OR expires_ms > GREATEST(p_now, updated_ms))
        RETURNING n_events - cardinality(p_blobs), updated_ms INTO v_first, v_now;
      EXIT WHEN FOUND;
    END IF;
    -- Else the checks one by one under the row's lock, the trace created or replaced first;
    -- a concurrent first append's row is taken as it is, to be checked, on the next attempt.
    FOR attempt IN 1..3 LOOP
      t := rc_live(p_trace, p_now, true);
      EXIT WHEN t.trace_id IS NOT NULL;
      INSERT INTO rc_traces (trace_id, circuit, version, n_events, n_interventions,
        created_ms, updated_ms) VALUES (p_trace, p_circuit, p_version, 0, 0, p_now, p_now)
        ON CONFLICT (trace_id) DO NOTHING;
    END LOOP;
    IF t.trace_id IS NULL THEN
      status := 'deleted';
    ELSIF rc_replayed(p_trace, p_key, GREATEST(p_now, t.updated_ms) - p_window) THEN
      status := 'ok';
    ELSIF t.circuit <> p_circuit THEN
      status := 'mismatch';
      detail := t.circuit;
    ELSIF t.completion IS NOT NULL THEN
      status := 'completed';
    END IF;
    IF status IS NOT NULL THEN  -- refused or replayed, having changed nothing
      RETURN;
    END IF;
  END LOOP;
  INSERT INTO rc_envelopes (trace_id, ordinal, blob)
    SELECT p_trace, v_first + u.n, u.b FROM unnest(p_blobs) WITH ORDINALITY AS u (b, n)
    ON CONFLICT (trace_id, ordinal) DO NOTHING;
  IF p_key IS NOT NULL THEN
    PERFORM rc_remember(p_trace, p_key, v_now, p_window);
  END IF;
  status := 'ok';
END $$"""

_RESUME = """
-- rc_resume: record the trace's resume step p_step (decimal text: a u64).
-- p_now: ms   p_ttl: ms, NULL: kept
-- Returns ('ok', NULL), ('not_found', NULL) or ('completed', NULL).
CREATE OR REPLACE FUNCTION rc_resume(p_trace TEXT, p_step TEXT, p_now BIGINT, p_ttl BIGINT,
  OUT status TEXT, OUT detail TEXT) LANGUAGE plpgsql AS $$
DECLARE
  t rc_traces := rc_live(p_trace, p_now, false);
  v_now BIGINT := GREATEST(p_now, t.updated_ms);
BEGIN
  IF t.trace_id IS NULL THEN
    status := 'not_found';
  ELSIF t.completion IS NOT NULL THEN
    status := 'completed';
  ELSE
    UPDATE rc_traces SET updated_ms = v_now, expires_ms = v_now + p_ttl, resumed = p_step
      WHERE trace_id = p_trace;
    status := 'ok';
  END IF;
END $$"""

_COMPLETE = """
-- rc_complete: set (or overwrite) the trace's completion state p_state.
-- p_now: ms   p_ttl: ms from now (completed_ttl, else ttl), NULL: kept
-- Returns ('ok', NULL) or ('not_found', NULL).
CREATE OR REPLACE FUNCTION rc_complete(p_trace TEXT, p_state TEXT, p_now BIGINT,
  p_ttl BIGINT, OUT status TEXT, OUT detail TEXT) LANGUAGE plpgsql AS $$
DECLARE
  t rc_traces := rc_live(p_trace, p_now, false);
  v_now BIGINT := GREATEST(p_now, t.updated_ms);
BEGIN
  IF t.trace_id IS NULL THEN
    status := 'not_found';
  ELSE
    UPDATE rc_traces SET updated_ms = v_now, expires_ms = v_now + p_ttl, completion = p_state
      WHERE trace_id = p_trace;
    status := 'ok';
  END IF;
END $$"""

_INTERVENE = """
-- rc_intervene: append an intervention (save_intervention), also to a completed trace.
-- p_blob: its codec bytes   p_key: the idempotency key or NULL   p_now: ms
-- p_ttl, p_completed_ttl: ms from now for an open, a completed trace, NULL: kept
-- p_window: ms a key is remembered
-- Returns ('ok', NULL) applied or replayed, or ('not_found', NULL).
CREATE OR REPLACE FUNCTION rc_intervene(p_trace TEXT, p_blob BYTEA, p_key TEXT,
  p_now BIGINT, p_ttl BIGINT, p_completed_ttl BIGINT, p_window BIGINT,
  OUT status TEXT, OUT detail TEXT) LANGUAGE plpgsql AS $$
DECLARE
  t rc_traces := rc_live(p_trace, p_now, false);
  v_now BIGINT := GREATEST(p_now, t.updated_ms);
  n BIGINT := t.n_interventions + 1;
BEGIN
  IF t.trace_id IS NULL THEN
    status := 'not_found';
  ELSIF rc_replayed(p_trace, p_key, v_now - p_window) THEN
    status := 'ok';
  ELSE
    INSERT INTO rc_interventions (trace_id, ordinal, blob) VALUES (p_trace, n, p_blob)
      ON CONFLICT (trace_id, ordinal) DO NOTHING;
    UPDATE rc_traces SET updated_ms = v_now, n_interventions = n, expires_ms = v_now
      + CASE WHEN t.completion IS NULL THEN p_ttl ELSE p_completed_ttl END
      WHERE trace_id = p_trace;
    IF p_key IS NOT NULL THEN
      PERFORM rc_remember(p_trace, p_key, v_now, p_window);
    END IF;
    status := 'ok';
  END IF;
END $$"""

FUNCTIONS = (_LIVE, _REPLAYED, _REMEMBER, _APPEND, _RESUME, _COMPLETE, _INTERVENE)
_COMPLETED = {"rc_append": "accept new events", "rc_resume": "be resumed"}  # TraceCompleted's


@functools.cache
def _statement(function: str, arity: int) -> str:
    places = ", ".join(f"${n}" for n in range(1, arity + 1))
    return f"SELECT status, detail FROM {function}({places})"


async def call(database: Database, function: str, trace_id: str, *args: Any) -> None:
    """Call `function` on the trace with `args` (its parameters after `p_trace`), and raise
    the contract's error for the refusal it returns.

    Raises:
        TraceNotFound, TraceCompleted; CircuitMismatch (`args[0]` is the circuit given).
        StoreUnavailable: the trace kept being deleted while appended to.
    """
    found = await database.call(_statement(function, len(args) + 1), trace_id, *args)
    status, detail = found or ("", "")
    if status == "ok":
        return
    if status == "not_found":
        raise TraceNotFound(trace_id)
    if status == "completed":
        raise TraceCompleted(trace_id, _COMPLETED[function])
    if status == "mismatch":
        raise CircuitMismatch(trace_id, detail, args[0])
    if status == "deleted":
        raise TREE.unavailable(f"trace {trace_id} kept being deleted while appended to")
    raise TREE.base(f"{function} returned {found!r}")
