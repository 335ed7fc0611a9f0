"""Phones in bulk: phonenumbers' answers (E.164, validity, time zones) at a few µs a number.

phonenumbers costs ~100 µs to parse and validate a number and ~150 µs for its time
zones: minutes for a million-row import. Its rules are data (regular expressions per
region and number type, and a table of zone prefixes), so this module compiles them once
and applies them the way phonenumbers does (region by leading digits, then the number
type in the order phonenumbers checks types, then the longest zone prefix). Input that
is E.164 once spaces, dashes, dots and brackets are dropped ("+1 212-555-0123"), and in
North American regions 10 digits or 11 starting with 1 ("(212) 555-0123"), takes that
path; anything else, or anything where phonenumbers would strip or rewrite a national
prefix, goes through resolvers.phones.normalize_phone in full. tests/test_imports.py
checks the answers against phonenumbers on many numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumberType
from phonenumbers.timezone import UNKNOWN_TIMEZONE
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from resolvers.errors import BadUserInput
from resolvers.phones import normalize_phone

_SEPARATORS = str.maketrans("", "", " -.()")
# phonenumbers' _number_type_helper checks these before fixed line and mobile, in order.
_SPECIAL_TYPES = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)


@dataclass(frozen=True)
class _Desc:
    """A PhoneNumberDesc, compiled."""

    pattern: re.Pattern[str] | None
    lengths: frozenset[int]

    @classmethod
    def of(cls, desc: object) -> _Desc:
        pattern = getattr(desc, "national_number_pattern", None)
        lengths = getattr(desc, "possible_length", None) or ()
        return cls(re.compile(pattern) if pattern else None, frozenset(lengths))

    def matches(self, national: str) -> bool:
        if self.pattern is None or (self.lengths and len(national) not in self.lengths):
            return False
        return self.pattern.fullmatch(national) is not None


@dataclass(frozen=True)
class _Region:
    """One region's metadata, compiled: enough to tell a number's type."""

    leading_digits: re.Pattern[str] | None
    general: _Desc
    special: tuple[tuple[_Desc, int], ...]
    # Any special type's pattern: most numbers match none, and one search says so.
    any_special: re.Pattern[str] | None
    fixed_line: _Desc
    mobile: _Desc
    same_mobile_and_fixed_line: bool

    def number_type(self, national: str) -> int:
        """phonenumbers' _number_type_helper."""
        if not self.general.matches(national):
            return PhoneNumberType.UNKNOWN
        if self.any_special is not None and self.any_special.fullmatch(national):
            for desc, number_type in self.special:
                if desc.matches(national):
                    return number_type
        if self.fixed_line.matches(national):
            if self.same_mobile_and_fixed_line or self.mobile.matches(national):
                return PhoneNumberType.FIXED_LINE_OR_MOBILE
            return PhoneNumberType.FIXED_LINE
        if not self.same_mobile_and_fixed_line and self.mobile.matches(national):
            return PhoneNumberType.MOBILE
        return PhoneNumberType.UNKNOWN


def _compile_region(metadata: PhoneMetadata) -> _Region:
    special = [
        desc.national_number_pattern
        for name, _ in _SPECIAL_TYPES
        if (desc := getattr(metadata, name)) is not None and desc.national_number_pattern
    ]
    return _Region(
        leading_digits=re.compile(metadata.leading_digits) if metadata.leading_digits else None,
        general=_Desc.of(metadata.general_desc),
        special=tuple(
            (_Desc.of(getattr(metadata, name)), number_type) for name, number_type in _SPECIAL_TYPES
        ),
        any_special=re.compile("|".join(f"(?:{p})" for p in special)) if special else None,
        fixed_line=_Desc.of(metadata.fixed_line),
        mobile=_Desc.of(metadata.mobile),
        same_mobile_and_fixed_line=bool(metadata.same_mobile_and_fixed_line_pattern),
    )


@cache
def _national_prefix(region: str) -> re.Pattern[str] | None:
    """The national prefix phonenumbers strips (or rewrites) while parsing for a region."""
    metadata = PhoneMetadata.metadata_for_region(region)
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(pattern) if pattern else None


@cache
def _zones(prefix: str) -> tuple[str, ...]:
    """The zones phonenumbers lists under a prefix, less its "unknown" zone."""
    return tuple(zone for zone in TIMEZONE_DATA[prefix] if zone != UNKNOWN_TIMEZONE)


@dataclass(frozen=True)
class _Country:
    """A country calling code's rules, compiled once."""

    code: str
    regions: tuple[_Region, ...]
    # The national prefix of the code's main region: phonenumbers parses "+..." with it.
    international_prefix: re.Pattern[str] | None
    # Number types that phonenumbers places by prefix (fixed line; mobile in a few).
    geographic: frozenset[int]
    country_zones: tuple[str, ...]
    # Lengths of the zone prefixes a number of this code can match, longest first.
    prefix_lengths: tuple[int, ...]

    @classmethod
    def compile(cls, country_code: int) -> _Country:
        code = str(country_code)
        regions = tuple(
            _compile_region(metadata)
            for region in COUNTRY_CODE_TO_REGION_CODE[country_code]
            if (metadata := PhoneMetadata.metadata_for_region_or_calling_code(country_code, region))
            is not None
        )
        geographic = frozenset(
            t
            for t in (
                PhoneNumberType.FIXED_LINE,
                PhoneNumberType.FIXED_LINE_OR_MOBILE,
                PhoneNumberType.MOBILE,
            )
            if phonenumbers.is_number_type_geographical(t, country_code)
        )
        # phonenumbers' _country_level_time_zones_for_number, prefix lengths and all.
        country_zones: tuple[str, ...] = ()
        for length in range(TIMEZONE_LONGEST_PREFIX, 0, -1):
            if code[: 1 + length] in TIMEZONE_DATA:
                country_zones = _zones(code[: 1 + length])
                break
        lengths = {
            len(prefix)
            for prefix in TIMEZONE_DATA
            if prefix.startswith(code) or code.startswith(prefix)
        }
        return cls(
            code=code,
            regions=regions,
            international_prefix=_national_prefix(
                phonenumbers.region_code_for_country_code(country_code)
            ),
            geographic=geographic,
            country_zones=country_zones,
            prefix_lengths=tuple(
                sorted((n for n in lengths if n <= TIMEZONE_LONGEST_PREFIX), reverse=True)
            ),
        )

    def number_type(self, national: str) -> int:
        """phonenumbers.number_type of +code national: UNKNOWN when not valid."""
        regions = self.regions
        if len(regions) == 1:
            return regions[0].number_type(national)
        # phonenumbers' region_code_for_number: leading digits where a region has them,
        # else the first region where the number has a type.
        for region in regions:
            if region.leading_digits is not None:
                if region.leading_digits.match(national):
                    return region.number_type(national)
            elif (found := region.number_type(national)) != PhoneNumberType.UNKNOWN:
                return found
        return PhoneNumberType.UNKNOWN

    def time_zones(self, national: str, found_type: int) -> tuple[str, ...]:
        """phonenumbers.timezone.time_zones_for_number, less its "unknown" zone."""
        if found_type == PhoneNumberType.UNKNOWN:
            return ()
        if found_type not in self.geographic:
            return self.country_zones
        # The longest prefix of the number (code and national number) with zones.
        digits = self.code + national
        for length in self.prefix_lengths:
            if (prefix := digits[:length]) in TIMEZONE_DATA:
                return _zones(prefix)
        return ()


_CODES = frozenset(str(code) for code in COUNTRY_CODE_TO_REGION_CODE)
_COUNTRIES: dict[str, _Country] = {}


def _country_of(digits: str) -> _Country | None:
    """The country of E.164 digits (no "+"); country codes are a prefix code."""
    for size in (1, 2, 3):
        code = digits[:size]
        if code in _CODES:
            country = _COUNTRIES.get(code)
            if country is None:
                country = _COUNTRIES[code] = _Country.compile(int(code))
            return country
    return None


def phone_facts(e164: str) -> tuple[int, tuple[str, ...]]:
    """phonenumbers' number type and time zones of a valid E.164 number."""
    country = _country_of(e164[1:])
    if country is None:
        return PhoneNumberType.UNKNOWN, ()
    national = e164[1 + len(country.code) :]
    found = country.number_type(national)
    return found, country.time_zones(national, found)


class PhoneNormalizer:
    """E.164 and time zones for phones written any common way, as phonenumbers gives them."""

    def __init__(self, region: str) -> None:
        self.region = region.upper()
        self.north_american = phonenumbers.country_code_for_region(self.region) == 1
        self.national_prefix = _national_prefix(self.region)
        self.fast = 0

    def normalize(self, raw: str) -> tuple[str, tuple[str, ...]] | None:
        """(E.164, the zones it may ring in), or None when it is not a valid number."""
        text = raw.strip()
        quick = self._fast_path(text)
        if quick is not None:
            self.fast += 1
            return quick
        try:
            e164 = normalize_phone(text, self.region)
        except BadUserInput:
            return None
        return e164, phone_facts(e164)[1]

    def _fast_path(self, text: str) -> tuple[str, tuple[str, ...]] | None:
        if "(0" in text:
            return None  # "+44 (0)20 ...": an optional national prefix, for phonenumbers
        compact = text.translate(_SEPARATORS)
        international = compact[:1] == "+"
        if international:
            digits = compact[1:]
        elif self.north_american and len(compact) == 10:
            digits = "1" + compact
        elif self.north_american and len(compact) == 11 and compact[0] == "1":
            digits = compact
        else:
            return None
        if not (7 <= len(digits) <= 15 and digits.isascii() and digits.isdigit()):
            return None
        country = _country_of(digits)
        if country is None:
            return None
        national = digits[len(country.code) :]
        # phonenumbers parses with a region's rules: the given region for a national number,
        # the code's main region after a "+". Where it might strip a prefix, let it.
        prefix = country.international_prefix if international else self.national_prefix
        if prefix is not None and prefix.match(national):
            return None
        found = country.number_type(national)
        if found == PhoneNumberType.UNKNOWN:
            return None
        return "+" + digits, country.time_zones(national, found)
