"""Input limits that Python checks early and the database enforces too, one home each.

Each mirrors a named constraint of the schema (sql/migrations): Python checks first so a
client or an import hears which field is wrong, row by row, before any write; the
constraint holds for every client. tests/test_limits.py proves that the database takes
each boundary and refuses one past it, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import re

# prospects_name_length: length(btrim(name)) BETWEEN 1 AND 200.
MAX_PROSPECT_NAME_LENGTH = 200
# users_name_length: length(name) <= 200.
MAX_USER_NAME_LENGTH = 200
# prospects_email_format, users_email_format: length(email) <= 254.
MAX_EMAIL_LENGTH = 254
# prospects_email_format, users_email_format (fullmatch); Python's \s is wider: stricter.
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+")
# prospects_company_length: length(company) <= 200.
MAX_COMPANY_LENGTH = 200
# prospects_priority_range: priority BETWEEN -1000 AND 1000.
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
# call_logs_notes_length: length(notes) <= 10000.
MAX_NOTES_LENGTH = 10_000
# call_logs_recording_url_length: length(recording_url) <= 2048.
MAX_RECORDING_URL_LENGTH = 2048
# call_logs_duration_range: duration BETWEEN 0 AND 86400.
MIN_DURATION_SECONDS, MAX_DURATION_SECONDS = 0, 86_400
# do_not_call_scope_length: length(scope) <= 64.
MAX_DO_NOT_CALL_SCOPE_LENGTH = 64
# do_not_call_reason_length, do_not_call_removal_reason_length: length(...) <= 500.
MAX_DO_NOT_CALL_REASON_LENGTH = 500
# calling_hours_weekday: weekday BETWEEN 0 AND 6 (0 is Sunday, as extract(dow)).
MIN_WEEKDAY, MAX_WEEKDAY = 0, 6
# dialing_rules_total_positive, _day_positive, _number_positive: each cap > 0.
MIN_ATTEMPTS = 1
