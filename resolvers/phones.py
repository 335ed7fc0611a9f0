"""Phone numbers, stored in E.164 so every way of writing one number is one prospect."""

from __future__ import annotations

import phonenumbers

from resolvers.errors import BadUserInput


def normalize_phone(raw: str, region: str, field: str = "phone") -> str:
    """E.164 form of a phone number written any common way, or BAD_USER_INPUT."""
    text = raw.strip()
    if not text or len(text) > 64:
        raise BadUserInput(f"{field} is not a valid phone number", field=field)
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise BadUserInput(f"{field} is not a valid phone number", field=field) from None
    if not phonenumbers.is_valid_number(number):
        raise BadUserInput(f"{field} is not a valid phone number", field=field)
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def phone_digits(text: str) -> str | None:
    """The digits of a search text when it looks like part of a phone number."""
    digits = "".join(ch for ch in text if ch.isdigit())
    return digits if len(digits) >= 3 and len(digits) >= len(text.strip()) // 2 else None


def phone_time_zones(e164: str) -> list[str]:
    """The IANA zones a number may ring in (several where it spans zones), or none known."""
    from phonenumbers import timezone

    zones = timezone.time_zones_for_number(phonenumbers.parse(e164))
    return [zone for zone in zones if zone != timezone.UNKNOWN_TIMEZONE]
