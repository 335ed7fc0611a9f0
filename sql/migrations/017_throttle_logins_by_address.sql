-- Throttle failed logins by client address (and by email from that address) instead of
-- locking the email out for everyone: each row is one attempt from one client, written
-- before its password is checked (checking) and deleted when the password was right.
DELETE FROM login_failures;
-- '0.0.0.0/0' stands for a client whose address is unknown (a UNIX socket), which all
-- such clients share.
ALTER TABLE login_failures ADD COLUMN address cidr NOT NULL DEFAULT '0.0.0.0/0';
ALTER TABLE login_failures ADD COLUMN checking boolean NOT NULL DEFAULT false;
DROP INDEX login_failures_email_idx;
CREATE INDEX login_failures_address_idx ON login_failures (address, failed_at);
CREATE INDEX login_failures_failed_at_idx ON login_failures (failed_at);
