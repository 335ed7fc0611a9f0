-- Drop the counter that numbered call events: its row lock made every call start and end
-- in the database commit one after another. Events now carry their transaction's id and
-- each server numbers what it sends (sql/functions/events.sql, resolvers/events.py).
DROP FUNCTION IF EXISTS publish_call_event(text, active_calls, text);
DROP FUNCTION IF EXISTS active_calls_snapshot();
DROP TABLE call_event_sequence;
