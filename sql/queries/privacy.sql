-- Privacy requests: everything held about a prospect, and erasing its personal data.

-- name: export_prospect
-- Everything held about prospect $1 as JSON, logged as a request by admin $2.
SELECT export_prospect($1, $2);

-- name: erase_prospect
-- Erase prospect $1's personal data, logged as a request by admin $2.
SELECT erased_at, call_logs_erased, archived_call_logs_erased FROM erase_prospect($1, $2);
