"""Names for DNS numbers, and the wire-form question name decoded for people."""

from __future__ import annotations

QTYPES: dict[int, str] = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
    48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 252: "AXFR", 255: "ANY", 257: "CAA",
}  # fmt: skip
RCODES: dict[int, str] = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}  # fmt: skip
ERROR_RCODES = frozenset({"NXDOMAIN", "SERVFAIL"})


def qtype_name(number: int) -> str:
    return QTYPES.get(number, f"TYPE{number}")


def rcode_name(number: int) -> str:
    return RCODES.get(number, f"RCODE{number}")


def _label(raw: bytes) -> str:
    # printable ASCII as is, the rest (and the dot, and the backslash) escaped as
    # \DDD the way zone files and dig write them
    return "".join(
        chr(b) if 0x21 <= b <= 0x7E and b not in (0x2E, 0x5C) else f"\\{b:03d}" for b in raw
    )


def decode_name(*, wire: bytes) -> str:
    """``b"\\x07example\\x03com"`` → ``"example.com"``; the root → ``"."``.

    ``wire`` may stop inside a label (the probe cuts long names): what is
    there is kept.
    """
    labels: list[str] = []
    pos = 0
    while pos < len(wire):
        length = wire[pos]
        if length == 0:
            break
        labels.append(_label(wire[pos + 1 : pos + 1 + length]))
        pos += length + 1
    return ".".join(labels) if labels else "."
