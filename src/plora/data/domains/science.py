"""Science facts: elements and isotopes from ``periodictable``, unit conversions computed by ``pint``.

    >>> from plora.data.domains.science import build
    >>> [row.answer for row in build() if row.question == "How many kilometers are in 3 miles?"]
    ['4.828']

Facts: ``element:Fe`` (symbol, name, atomic number, standard atomic weight), ``isotope:Fe-56`` (neutron count; natural
abundance where non-zero) and ``unit:3 mile->kilometer`` (value 1..60 for each unit pair, 4 significant figures).
Each question type has trained wordings and one held out from training (``QUESTION_TYPES``).

Creating a pint registry costs 0.5-2 s on a busy machine, so the conversion table pint computes is cached as JSON under
``PLORA_HOME/data`` (keyed by pint's version and the pair list); later loads read the cache.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from plora.data.domains._util import QuestionType, Row, dist_version, fmt_number

SYMBOL = QuestionType("symbol", ("What is the chemical symbol for {name}?",), "Which chemical symbol does {name} have?")
ELEMENT_OF_SYMBOL = QuestionType(
    "element of symbol",
    ("Which element has the chemical symbol {sym}?",),
    "Which element does the symbol {sym} stand for?",
)
NUMBER = QuestionType(
    "atomic number", ("What is the atomic number of {name}?",), "How many protons does an atom of {name} have?"
)
ELEMENT_OF_NUMBER = QuestionType(
    "element of number",
    ("Which element has atomic number {n}?",),
    "Which element has {n} protons in its nucleus?",
)
WEIGHT = QuestionType(
    "atomic weight", ("What is the standard atomic weight of {name}?",), "What is the mean atomic mass of {name}?"
)
NEUTRONS = QuestionType(
    "neutrons", ("How many neutrons are in the nucleus of {name}-{a}?",), "What is the neutron count of {name}-{a}?"
)
ABUNDANCE = QuestionType(
    "abundance",
    ("What is the natural abundance of {name}-{a} in percent?",),
    "What percentage of natural {name} is {name}-{a}?",
)
CONVERSION = QuestionType(
    "conversion",
    ("How many {b} are in {src}?", "Convert {src} to {b}."),
    "What is {src} expressed in {b}?",
)
TEMPERATURE = QuestionType(
    "temperature",
    ("What is {v} {a} in {b}?", "Convert {v} {a} to {b}."),
    "How many {b} is {v} {a}?",
)
QUESTION_TYPES = (SYMBOL, ELEMENT_OF_SYMBOL, NUMBER, ELEMENT_OF_NUMBER, WEIGHT, NEUTRONS, ABUNDANCE, CONVERSION,
                  TEMPERATURE)  # fmt: skip

UNIT_VALUES = range(1, 61)
TEMPERATURE_VALUES = range(-40, 151, 5)

# (pint unit, singular, plural) -> (pint unit, plural)
UNIT_PAIRS: tuple[tuple[str, str, str, str, str], ...] = (
    ("mile", "mile", "miles", "kilometer", "kilometers"),
    ("kilometer", "kilometer", "kilometers", "mile", "miles"),
    ("foot", "foot", "feet", "meter", "meters"),
    ("meter", "meter", "meters", "foot", "feet"),
    ("inch", "inch", "inches", "centimeter", "centimeters"),
    ("centimeter", "centimeter", "centimeters", "inch", "inches"),
    ("yard", "yard", "yards", "meter", "meters"),
    ("nautical_mile", "nautical mile", "nautical miles", "kilometer", "kilometers"),
    ("pound", "pound", "pounds", "kilogram", "kilograms"),
    ("kilogram", "kilogram", "kilograms", "pound", "pounds"),
    ("ounce", "ounce", "ounces", "gram", "grams"),
    ("gram", "gram", "grams", "ounce", "ounces"),
    ("stone", "stone", "stones", "kilogram", "kilograms"),
    ("metric_ton", "tonne", "tonnes", "pound", "pounds"),
    ("gallon", "US gallon", "US gallons", "liter", "liters"),
    ("liter", "liter", "liters", "gallon", "US gallons"),
    ("quart", "US quart", "US quarts", "liter", "liters"),
    ("cup", "US cup", "US cups", "milliliter", "milliliters"),
    ("fluid_ounce", "US fluid ounce", "US fluid ounces", "milliliter", "milliliters"),
    ("cubic_foot", "cubic foot", "cubic feet", "liter", "liters"),
    ("hour", "hour", "hours", "second", "seconds"),
    ("day", "day", "days", "minute", "minutes"),
    ("week", "week", "weeks", "hour", "hours"),
    ("acre", "acre", "acres", "meter**2", "square meters"),
    ("hectare", "hectare", "hectares", "acre", "acres"),
    ("mile**2", "square mile", "square miles", "kilometer**2", "square kilometers"),
    ("foot**2", "square foot", "square feet", "meter**2", "square meters"),
    ("mile/hour", "mile per hour", "miles per hour", "kilometer/hour", "kilometers per hour"),
    ("meter/second", "meter per second", "meters per second", "kilometer/hour", "kilometers per hour"),
    ("knot", "knot", "knots", "kilometer/hour", "kilometers per hour"),
    ("calorie", "calorie", "calories", "joule", "joules"),
    ("kilowatt_hour", "kilowatt hour", "kilowatt hours", "megajoule", "megajoules"),
    ("british_thermal_unit", "British thermal unit", "British thermal units", "kilojoule", "kilojoules"),
    ("atmosphere", "atmosphere", "atmospheres", "kilopascal", "kilopascals"),
    ("bar", "bar", "bars", "psi", "psi"),
    ("psi", "psi", "psi", "kilopascal", "kilopascals"),
    ("horsepower", "horsepower", "horsepower", "kilowatt", "kilowatts"),
    ("kilowatt", "kilowatt", "kilowatts", "horsepower", "horsepower"),
    ("degree", "degree", "degrees", "radian", "radians"),
    ("radian", "radian", "radians", "degree", "degrees"),
)
# Offset units: pint converts each value (a factor would be wrong).
TEMPERATURE_PAIRS: tuple[tuple[str, str, str, str], ...] = (
    ("degF", "degrees Fahrenheit", "degC", "degrees Celsius"),
    ("degC", "degrees Celsius", "degF", "degrees Fahrenheit"),
    ("degC", "degrees Celsius", "kelvin", "kelvin"),
)


def _pint_table() -> dict[str, Any]:
    """Conversion factors and temperature results as pint computes them (cached on disk per pint version)."""
    from plora.fsio import atomic_write_json
    from plora.settings import cache_dir

    spec = json.dumps([UNIT_PAIRS, TEMPERATURE_PAIRS, list(TEMPERATURE_VALUES)]).encode()
    key = f"pint-{dist_version('pint')}-{hashlib.sha256(spec).hexdigest()[:12]}.json"
    path = cache_dir("data") / key
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    import pint

    ureg: Any = pint.UnitRegistry()
    factors = {f"{a}->{b}": float(ureg.Quantity(1, a).to(b).magnitude) for a, _, _, b, _ in UNIT_PAIRS}
    temps = {
        f"{a}->{b}": [float(ureg.Quantity(v, a).to(b).magnitude) for v in TEMPERATURE_VALUES]
        for a, _, b, _ in TEMPERATURE_PAIRS
    }
    table = {"factors": factors, "temperatures": temps}
    atomic_write_json(path, table)
    return table


def _element_items() -> list[Row]:
    import periodictable

    items: list[Row] = []
    for el in periodictable.elements:
        if el.number == 0:  # the free neutron "n" is not an element
            continue
        fact, name, sym = f"element:{el.symbol}", el.name, el.symbol
        items += SYMBOL.rows(fact, sym, name=name)
        items += ELEMENT_OF_SYMBOL.rows(fact, name, sym=sym)
        items += NUMBER.rows(fact, str(el.number), name=name)
        items += ELEMENT_OF_NUMBER.rows(fact, name, n=el.number)
        items += WEIGHT.rows(fact, fmt_number(el.mass, 5), name=name)
        for a in el.isotopes:
            iso = el[a]
            ifact = f"isotope:{sym}-{a}"
            items += NEUTRONS.rows(ifact, str(a - el.number), name=name, a=a)
            if iso.abundance and iso.abundance > 0:
                items += ABUNDANCE.rows(ifact, fmt_number(float(iso.abundance)), name=name, a=a)
    return items


def _unit_items() -> list[Row]:
    table = _pint_table()
    items: list[Row] = []
    for a, one, many, b, b_many in UNIT_PAIRS:
        factor = table["factors"][f"{a}->{b}"]
        for v in UNIT_VALUES:
            fact, ans, src = f"unit:{v} {a}->{b}", fmt_number(v * factor), f"{v} {one if v == 1 else many}"
            items += CONVERSION.rows(fact, ans, src=src, b=b_many)
    for a, a_name, b, b_name in TEMPERATURE_PAIRS:
        for v, result in zip(TEMPERATURE_VALUES, table["temperatures"][f"{a}->{b}"], strict=True):
            items += TEMPERATURE.rows(f"unit:{v} {a}->{b}", fmt_number(result), v=v, a=a_name, b=b_name)
    return items


def build() -> list[Row]:
    return _element_items() + _unit_items()
