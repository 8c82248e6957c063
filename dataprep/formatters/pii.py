"""PII masking: e-mail addresses, IP addresses and phone numbers become placeholders.

Candidates are found by broad patterns and IP addresses confirmed with the standard
library's `ipaddress`, so version numbers and slices (`a[::2]`) stay as they are.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>"}
PII_KINDS = tuple(PLACEHOLDERS)  # what a mask is counted as: pii_<kind>

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# Three groups of digits with separators, optionally a +country code and an (area) code:
# +1 555 123 4567, (555) 123-4567, 020 7946 0958. Two-group numbers are too often not phones.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?"  # +country code
    r"(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"  # (area) code, or a first group
    r"\d{3,4}[ .-]\d{3,5}(?![\w.-]\d)"
)


def _is_ip(candidate: str) -> bool:
    if candidate.count(":") >= 2 and sum(1 for g in candidate.split(":") if g) < 2:
        return False  # "::1", "a[::2]": too little to be an address worth masking
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def mask_pii(text: str, counts: Counter) -> str:
    """``text`` with each e-mail address, IP address and phone number replaced by its
    placeholder; ``counts`` gets pii_email, pii_ip and pii_phone."""

    def masker(kind: str, check=None):
        def replace(match: re.Match) -> str:
            if check and not check(match.group(0)):
                return match.group(0)
            counts[f"pii_{kind}"] += 1
            return PLACEHOLDERS[kind]

        return replace

    if "@" in text:  # a scan the pattern would make for nothing in most documents
        text = _EMAIL.sub(masker("email"), text)
    text = _IPV6.sub(masker("ip", _is_ip), text)
    text = _IPV4.sub(masker("ip", _is_ip), text)
    return _PHONE.sub(masker("phone"), text)
