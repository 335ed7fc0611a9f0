-- Keep call events in a table the servers read by transaction id, so that publishing one
-- holds nothing until commit (NOTIFY in the transaction serialised every notifying commit
-- behind the previous one's WAL flush: issue 13).

-- Append-only: one row per event, written in the transaction that makes the change. xid
-- is that transaction's id (the top-level one, as pg_current_snapshot() lists them); id
-- orders the events of one transaction (an identity's nextval is not held until commit).
CREATE TABLE call_events (
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    id         bigint GENERATED ALWAYS AS IDENTITY,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload    jsonb NOT NULL,
    CONSTRAINT call_events_pkey PRIMARY KEY (xid, id)
);
-- Pruning by age: a block-range index costs next to nothing per insert.
CREATE INDEX call_events_created_at_idx ON call_events USING brin (created_at);

-- The newest transaction id whose events pruning may have deleted: a server whose last
-- read snapshot does not show every transaction up to it may have missed events.
CREATE TABLE call_events_pruned (
    singleton       boolean PRIMARY KEY DEFAULT true
                    CONSTRAINT call_events_pruned_singleton CHECK (singleton),
    pruned_through  xid8 NOT NULL
);
INSERT INTO call_events_pruned (pruned_through) VALUES ('0');
