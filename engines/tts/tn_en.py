"""English text normalization for TTS: numbers, money, dates, times, units and symbols to words.

Own rules (wetext's English FSTs misread e.g. "1234 units" and "$12.50"); apostrophes, quotes and
dashes are left alone for the G2P to see.
"""

from __future__ import annotations

import re

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORD_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip
_MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]  # fmt: skip
_CURRENCY = {"$": ("dollar", "cent"), "£": ("pound", "penny"), "€": ("euro", "cent"),
             "¥": ("yen", ""), "￥": ("yuan", "")}  # fmt: skip
_UNITS = {
    "km/h": "kilometer per hour", "mph": "mile per hour", "km": "kilometer", "cm": "centimeter",
    "mm": "millimeter", "m": "meter", "kg": "kilogram", "mg": "milligram", "g": "gram",
    "lb": "pound", "lbs": "pound", "ml": "milliliter", "l": "liter", "tb": "terabyte",
    "gb": "gigabyte", "mb": "megabyte", "kb": "kilobyte", "ghz": "gigahertz", "mhz": "megahertz",
    "khz": "kilohertz", "hz": "hertz", "ms": "millisecond", "s": "second", "sec": "second",
    "min": "minute", "h": "hour", "hr": "hour", "°c": "degree Celsius", "℃": "degree Celsius",
    "°f": "degree Fahrenheit", "°": "degree", "w": "watt", "kw": "kilowatt", "v": "volt",
}  # fmt: skip
_ABBREV = {
    "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "Dr.": "Doctor", "Prof.": "Professor",
    "Jr.": "Junior", "Sr.": "Senior", "vs.": "versus", "etc.": "et cetera", "e.g.": "for example",
    "i.e.": "that is", "a.m.": "A M", "p.m.": "P M", "No.": "number", "Jan.": "January",
    "Feb.": "February", "Mar.": "March", "Apr.": "April", "Jun.": "June", "Jul.": "July",
    "Aug.": "August", "Sep.": "September", "Sept.": "September", "Oct.": "October",
    "Nov.": "November", "Dec.": "December",
}  # fmt: skip
_SYMBOLS = {"&": " and ", "@": " at ", "+": " plus ", "=": " equals ", "×": " times ",
            "#": " number ", "~": " about "}  # fmt: skip


def cardinal(n: int) -> str:
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + (f" and {cardinal(rest)}" if rest else "")
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            tail = "" if not rest else (" and " if rest < 100 else " ") + cardinal(rest)
            return f"{cardinal(head)} {name}{tail}"
    raise AssertionError(n)


def ordinal(n: int) -> str:
    words = cardinal(n)
    head, sep, last = words.rpartition("-" if "-" in words.split(" ")[-1] else " ")
    if last in _ORD_IRREGULAR:
        last = _ORD_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def year(n: int) -> str:
    if n % 1000 < 10 and n // 1000 in (1, 2) and n % 100 < 10:  # 2005, 1005
        return cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return cardinal(hi) + " hundred"
    return cardinal(hi) + " " + (f"oh {_ONES[lo]}" if lo < 10 else cardinal(lo))


def digits(s: str) -> str:
    return " ".join("oh" if c == "0" else _ONES[int(c)] for c in s if c.isdigit())


def number(s: str) -> str:
    """A digit string (maybe with a decimal part) in words."""
    whole, _, frac = s.partition(".")
    if len(whole) > 15 or (len(whole) > 1 and whole.startswith("0")):
        words = digits(whole)
    else:
        words = cardinal(int(whole or "0"))
    return words + (" point " + " ".join(_ONES[int(c)] for c in frac) if frac else "")


def _plural(word: str, amount: str) -> str:
    if amount in ("1", "1.0") or not word:
        return word
    if word == "penny":
        return "pence"
    if word.endswith("y") and not word.endswith("ey"):
        return word[:-1] + "ies"
    if word in ("yen", "yuan", "hertz") or word.endswith(("hertz", "Celsius", "Fahrenheit")):
        return word.replace("degree", "degrees")
    return word + ("es" if word.endswith(("s", "x", "ch")) else "s")


def _money(m: re.Match[str]) -> str:
    major, minor = _CURRENCY[m["sym"]]
    whole, cents, scale = m["whole"], m["cents"], m["scale"]
    if scale:
        return f"{number(whole + ('.' + cents if cents else ''))} {scale} {_plural(major, '2')}"
    out = f"{number(whole)} {_plural(major, whole)}"
    if cents and int(cents) and minor:
        cents = cents.ljust(2, "0")
        out += f" and {cardinal(int(cents))} {_plural(minor, str(int(cents)))}"
    return out


def _time(m: re.Match[str]) -> str:
    h, mm, ampm = int(m["h"]), int(m["m"]), (m["ampm"] or "").replace(".", "").upper()
    words = cardinal(h) + (
        " o'clock" if mm == 0 and not ampm else "" if mm == 0 else f" oh {_ONES[mm]}" if mm < 10
        else " " + cardinal(mm)
    )  # fmt: skip
    return words + (" " + " ".join(ampm) if ampm else "") + _final_dot(m)


def _final_dot(m: re.Match[str]) -> str:
    """An abbreviation's dot that also ended the sentence."""
    return "." if m[0].endswith(".") and not m.string[m.end() :].strip() else ""


def _ampm(m: re.Match[str]) -> str:
    return f" {m[1].upper()} M{_final_dot(m)}"


def _date(m: re.Match[str]) -> str:
    y, mo, d = int(m["y"]), int(m["mo"]), int(m["d"])
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m[0]
    return f"{_MONTHS[mo - 1]} {ordinal(d)}, {year(y)}"


def _fraction(m: re.Match[str]) -> str:
    a, b = int(m["a"]), int(m["b"])
    if b == 0:
        return m[0]
    if b == 2:
        return f"{cardinal(a)} {'half' if a == 1 else 'halves'}"
    if b == 4:
        return f"{cardinal(a)} {'quarter' if a == 1 else 'quarters'}"
    if b < 20:
        den = ordinal(b)
        return f"{cardinal(a)} {den if a == 1 else den + 's'}"
    return f"{cardinal(a)} over {cardinal(b)}"


def _range(m: re.Match[str]) -> str:
    a, b = m["a"], m["b"]
    if len(a) == len(b) == 4 and a < b:
        return f"{year(int(a))} to {year(int(b))}"
    if len(a) <= 3 and len(b) <= 3:
        return f"{a} to {b}"
    return digits(a) + ", " + digits(b)  # phone-like: 555-1234


def _decade(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _unit(m: re.Match[str]) -> str:
    amount, unit = m["n"], m["u"]
    name = _UNITS[unit.lower()]
    if " per " in name:
        head, _, tail = name.partition(" per ")
        return f"{amount} {_plural(head, amount)} per {tail}"
    return f"{amount} {_plural(name, amount)}"


_UNIT_RE = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_RULES: list[tuple[re.Pattern[str], object]] = [
    (re.compile(r"(?<=\d),(?=\d{3}\b)"), ""),
    (re.compile(r"(?P<sym>[$£€¥￥])\s?(?P<whole>\d+)(?:\.(?P<cents>\d{1,2}))?"
                r"(?:\s?(?P<scale>million|billion|thousand|trillion)\b)?"), _money),
    (re.compile(r"\b(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})\b"), _date),
    (re.compile(r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)\b(?:\s?(?P<ampm>[ap]\.m\.|[ap]m)(?!\w))?",
                re.I), _time),
    (re.compile(r"(?<=\d)\s?([ap])(?:\.m\.|m)(?!\w)", re.I), _ampm),
    (re.compile(r"(\d+(?:\.\d+)?)\s?%"), lambda m: f"{m[1]} percent"),
    (re.compile(r"\b(\d{4})s\b"), lambda m: _decade(year(int(m[1])))),
    (re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.I), lambda m: ordinal(int(m[1]))),
    (re.compile(r"(?i)\b(in|since|by|from|until|of|year|during|before|after)\s(1[1-9]\d\d|20\d\d)"
                r"\b(?![.,]\d)"), lambda m: f"{m[1]} {year(int(m[2]))}"),
    (re.compile(r"(?<![\w.])(?P<a>\d+)/(?P<b>\d+)(?![\w/])"), _fraction),
    (re.compile(r"(?<![\w.-])(?P<a>\d+)\s?[-–]\s?(?P<b>\d+)(?![\w-]|\.\d)"), _range),
    (re.compile(rf"(?P<n>\d+(?:\.\d+)?)\s?(?P<u>{_UNIT_RE})(?![\w/])", re.I), _unit),
    (re.compile(r"(?<![\w-])-(?=\d)"), "minus "),
    (re.compile(r"\d+(?:\.\d+)?"), lambda m: number(m[0])),
]  # fmt: skip
_ABBREV_RE = re.compile(
    r"(?<!\w)(" + "|".join(re.escape(a) for a in _ABBREV if a not in ("a.m.", "p.m.")) + r")(?!\w)"
)


def normalize_en(text: str) -> str:
    text = _ABBREV_RE.sub(lambda m: _ABBREV[m[1]], text)
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)  # type: ignore[arg-type]
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    text = re.sub(r"(?<=[A-Za-z])/(?=[A-Za-z])", " or ", text)
    return re.sub(r"[ \t]+", " ", text).strip()
