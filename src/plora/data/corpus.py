"""The general-text corpus that pre-trains ``plora-tiny``, made by the project itself, offline.

    >>> from plora.data.corpus import qa
    >>> qa("What day comes after Monday?", "Tuesday")   # one document in the project's prompt format
    'Question: What day comes after Monday?\\nAnswer: Tuesday'

``build_corpus(seed=0)`` gives all 34,590 documents and ``corpus_splits(seed=0)`` the (train, held-out) pair that
pre-trained plora-tiny; building them takes about 10 s (``python -m plora.data.overlap`` does, to check them).

Sources: ISO country, subdivision, currency, language and script tables (``pycountry``), US states with capitals,
abbreviations and counties (``us``), docstrings of a fixed list of standard-library modules, and templated general
sentences. A share of the documents are question/answer items in the project's prompt format
``"Question: {q}\\nAnswer: {a}"`` so the base learns the format before any plasmid is trained.

Deliberately absent: the built-in domains' facts (ICD-10 codes, court reporters and courts, the periodic table, unit
conversions, arithmetic), so that domain plasmids have something to add. Docstring paragraphs that look like
arithmetic (``12 + 30``) are dropped for the same reason.

Deterministic: the same seed on the same Python gives the same list (docstrings differ slightly between Python
versions, which is why the built model folder is committed rather than rebuilt on install).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import random
import re
import subprocess
import sys
import warnings

from plora.errors import DataError

QA_TEMPLATE = "Question: {q}\nAnswer: {a}"

# A fixed, sorted list: importing is side-effect free for each of these, and none is about numbers or arithmetic
# (math, cmath, decimal, fractions, statistics, numbers are left out on purpose).
STDLIB_MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "bz2", "calendar", "cmd", "code", "codecs",
    "collections", "colorsys", "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "difflib", "dis", "email", "enum", "filecmp", "fnmatch", "ftplib", "functools", "getopt", "gettext",
    "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http.client", "http.cookiejar",
    "http.cookies", "http.server", "imaplib", "importlib", "inspect", "io", "ipaddress", "itertools", "json",
    "keyword", "linecache", "locale", "logging", "lzma", "mailbox", "mimetypes", "multiprocessing", "netrc",
    "optparse", "os", "pathlib", "pdb", "pickle", "pkgutil", "platform", "plistlib", "poplib", "pprint", "profile",
    "pstats", "queue", "quopri", "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex",
    "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "string", "struct", "subprocess",
    "sys", "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "tokenize", "trace", "traceback",
    "types", "typing", "unittest", "urllib.parse", "urllib.request", "urllib.robotparser", "uuid", "warnings", "wave",
    "weakref", "wsgiref.simple_server", "xml.dom.minidom", "xml.etree.ElementTree", "xml.sax", "xmlrpc.client",
    "zipfile", "zlib", "zoneinfo",
)  # fmt: skip

_ARITHMETIC = re.compile(r"\d\s*[-+*/%]\s*\d|\d\s*\*\*|\b\d+\s*=\s*\d")
_SPACES = re.compile(r"[ \t]+")


def qa(question: str, answer: str) -> str:
    """One question/answer document in the prompt format the whole project uses."""
    return QA_TEMPLATE.format(q=question, a=answer)


def _an(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _countries() -> list[str]:
    import pycountry

    docs: list[str] = []
    for c in sorted(pycountry.countries, key=lambda c: c.alpha_2):
        name = getattr(c, "common_name", None) or c.name
        official = getattr(c, "official_name", None)
        text = f"{name} is a country. Its two-letter ISO code is {c.alpha_2} and its three-letter code is {c.alpha_3}."
        if official and official != name:
            text += f" Its official name is the {official}."
        docs.append(text)
        docs.append(qa(f"What is the two-letter country code of {name}?", c.alpha_2))
        docs.append(qa(f"What is the three-letter country code of {name}?", c.alpha_3))
        docs.append(qa(f"Which country has the country code {c.alpha_2}?", name))
        if official and official != name:
            docs.append(qa(f"What is the official name of {name}?", f"the {official}"))
    countries = {c.alpha_2: (getattr(c, "common_name", None) or c.name) for c in pycountry.countries}
    for s in sorted(pycountry.subdivisions, key=lambda s: s.code):
        country = countries.get(s.country_code)
        if not country:
            continue
        kind = s.type.lower()
        docs.append(f"{s.name} is {_an(kind)} {kind} of {country}, with the code {s.code}.")
        docs.append(qa(f"In which country is the {kind} of {s.name}?", country))
    return docs


def _currencies_languages_scripts() -> list[str]:
    import pycountry

    docs: list[str] = []
    for cur in sorted(pycountry.currencies, key=lambda c: c.alpha_3):
        docs.append(f"The {cur.name} is a currency with the ISO code {cur.alpha_3}.")
        docs.append(qa(f"What is the ISO code of the currency {cur.name}?", cur.alpha_3))
        docs.append(qa(f"Which currency has the ISO code {cur.alpha_3}?", cur.name))
    scopes = {"I": "an individual language", "M": "a macrolanguage", "S": "a special code"}
    types = {"L": "living", "E": "extinct", "A": "ancient", "H": "historical", "C": "constructed", "S": "special"}
    for lang in sorted(pycountry.languages, key=lambda x: x.alpha_3):
        kind = types.get(getattr(lang, "type", ""), "")
        scope = scopes.get(getattr(lang, "scope", ""), "a language")
        docs.append(f"{lang.name} is {scope}{', ' + kind if kind else ''}, with the ISO 639-3 code {lang.alpha_3}.")
        docs.append(qa(f"Which language has the ISO 639-3 code {lang.alpha_3}?", lang.name))
        if hasattr(lang, "alpha_2"):
            docs.append(qa(f"What is the two-letter language code of {lang.name}?", lang.alpha_2))
    for fam in sorted(pycountry.language_families, key=lambda x: x.alpha_3):
        docs.append(f"The {fam.name} form a language family with the code {fam.alpha_3}.")
    for script in sorted(pycountry.scripts, key=lambda x: x.alpha_4):
        docs.append(f"{script.name} is a writing system with the ISO 15924 code {script.alpha_4}.")
        docs.append(qa(f"Which writing system has the code {script.alpha_4}?", script.name))
    return docs


def _us_states() -> list[str]:
    import us

    docs: list[str] = []
    for s in sorted(us.states.STATES_AND_TERRITORIES, key=lambda s: s.abbr):
        kind = "territory" if s.is_territory else "state"
        text = f"{s.name} is a US {kind}. Its postal abbreviation is {s.abbr}"
        text += f" and its capital is {s.capital}." if s.capital else "."
        if s.statehood_year:
            text += f" It became a state in {s.statehood_year}."
        if s.capital_tz:
            text += f" The capital keeps the time of the {s.capital_tz} time zone."
        docs.append(text)
        docs.append(qa(f"What is the postal abbreviation of {s.name}?", s.abbr))
        docs.append(qa(f"Which US {kind} has the postal abbreviation {s.abbr}?", s.name))
        if s.capital:
            docs.append(qa(f"What is the capital of {s.name}?", s.capital))
            docs.append(qa(f"{s.capital} is the capital of which US {kind}?", s.name))
        if s.statehood_year:
            docs.append(qa(f"In what year did {s.name} become a state?", str(s.statehood_year)))
        if s.ap_abbr and s.ap_abbr != s.name:
            docs.append(qa(f"What is the AP style abbreviation of {s.name}?", s.ap_abbr))
        counties = sorted(c.name for c in (s.counties or []))
        for i in range(0, len(counties), 12):
            docs.append(f"Counties of {s.name} include " + ", ".join(counties[i : i + 12]) + ".")
    return docs


def _clean_doc(doc: str) -> list[str]:
    paragraphs = []
    for para in re.split(r"\n\s*\n", doc):
        para = _SPACES.sub(" ", para.strip())
        if len(para) < 40 or _ARITHMETIC.search(para) or ">>>" in para:
            continue
        paragraphs.append(para)
    return paragraphs


# The harvest runs in a fresh interpreter so the corpus never depends on what the caller has imported. torch and
# transformers patch a few stdlib objects (transformers adds ``logging.Logger.warning_once``; torch.package replaces
# ``inspect.getfile``), and the shipped plora-tiny was pre-trained with both loaded, so the harvest loads them first.
_HARVEST = (
    "import json, runpy, sys\n"
    "import torch, transformers, rich.progress\n"
    "from transformers import GPT2Config, GPT2LMHeadModel\n"
    "json.dump(runpy.run_path(sys.argv[1])['_harvest_docstrings'](), sys.stdout)\n"
)


def _stdlib_docstrings() -> list[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    done = subprocess.run([sys.executable, "-c", _HARVEST, __file__], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"could not read the standard library's docstrings for the corpus: {last}")
    return json.loads(done.stdout)


def _harvest_docstrings() -> list[str]:
    docs: list[str] = []
    seen: set[str] = set()
    for modname in STDLIB_MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(modname)
        except ImportError:  # an optional C extension missing on this build
            continue
        objects = [module] + [getattr(module, n) for n in sorted(vars(module)) if not n.startswith("_")]
        for obj in objects:
            # Packages re-export from submodules (asyncio.tasks, unittest.case): keep those, drop foreign imports.
            owner = getattr(obj, "__module__", None) or ""
            if obj is not module and owner != module.__name__ and not owner.startswith(module.__name__ + "."):
                continue
            members = [obj]
            if inspect.isclass(obj):
                members += [m for n, m in sorted(vars(obj).items()) if not n.startswith("_") and callable(m)]
            for member in members:
                doc = inspect.getdoc(member) if callable(member) or inspect.ismodule(member) else None
                if not doc:
                    continue
                for para in _clean_doc(doc):
                    if para not in seen:
                        seen.add(para)
                        docs.append(para)
    return docs


_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # fmt: skip
_OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("light", "dark"), ("open", "closed"),
              ("early", "late"), ("happy", "sad"), ("strong", "weak"), ("full", "empty"), ("loud", "quiet"),
              ("old", "new"), ("rich", "poor"), ("wet", "dry"), ("hard", "soft"), ("high", "low"),
              ("long", "short"), ("true", "false"), ("near", "far"), ("thick", "thin"), ("clean", "dirty")]  # fmt: skip
_PLURALS = [("mouse", "mice"), ("child", "children"), ("foot", "feet"), ("tooth", "teeth"), ("goose", "geese"),
            ("man", "men"), ("woman", "women"), ("person", "people"), ("leaf", "leaves"), ("knife", "knives"),
            ("city", "cities"), ("box", "boxes"), ("bus", "buses"), ("wolf", "wolves"), ("cactus", "cacti"),
            ("ox", "oxen"), ("sheep", "sheep"), ("fish", "fish"), ("life", "lives"), ("story", "stories")]  # fmt: skip
_ANIMALS = [("dog", "bark", "puppy"), ("cat", "meow", "kitten"), ("cow", "moo", "calf"), ("sheep", "bleat", "lamb"),
            ("horse", "neigh", "foal"), ("duck", "quack", "duckling"), ("lion", "roar", "cub"),
            ("owl", "hoot", "owlet"), ("pig", "oink", "piglet"), ("goat", "bleat", "kid"), ("frog", "croak", "tadpole"),
            ("bee", "buzz", "larva")]  # fmt: skip
_COLOURS = [("grass", "green"), ("the sky", "blue"), ("snow", "white"), ("coal", "black"),
            ("a ripe banana", "yellow"), ("a ripe tomato", "red"), ("an orange", "orange"), ("a plum", "purple"),
            ("chocolate", "brown")]  # fmt: skip


def _general() -> list[str]:
    docs: list[str] = []
    for i, day in enumerate(_DAYS):
        nxt, prev = _DAYS[(i + 1) % 7], _DAYS[(i - 1) % 7]
        docs.append(f"{day} comes after {prev} and before {nxt}.")
        docs.append(qa(f"What day comes after {day}?", nxt))
        docs.append(qa(f"What day comes before {day}?", prev))
    for i, month in enumerate(_MONTHS):
        nxt, prev = _MONTHS[(i + 1) % 12], _MONTHS[(i - 1) % 12]
        docs.append(f"{month} follows {prev}, and {nxt} follows {month}.")
        docs.append(qa(f"Which month comes after {month}?", nxt))
        docs.append(qa(f"Which month comes before {month}?", prev))
    for a, b in _OPPOSITES:
        docs.append(f"The opposite of {a} is {b}, and the opposite of {b} is {a}.")
        docs.append(qa(f"What is the opposite of {a}?", b))
        docs.append(qa(f"What is the opposite of {b}?", a))
    for one, many in _PLURALS:
        docs.append(f"One {one}, two {many}: the plural of {one} is {many}.")
        docs.append(qa(f"What is the plural of {one}?", many))
    for animal, sound, young in _ANIMALS:
        docs.append(f"A {animal} makes a sound called a {sound}, and a young {animal} is called {_an(young)} {young}.")
        docs.append(qa(f"What sound does a {animal} make?", sound))
        docs.append(qa(f"What is a young {animal} called?", f"{_an(young)} {young}"))
    for thing, colour in _COLOURS:
        docs.append(f"The colour of {thing} is {colour}.")
        docs.append(qa(f"What colour is {thing}?", colour))
    return docs


def build_corpus(seed: int = 0) -> list[str]:
    """All documents, shuffled by ``seed``. Each document is one paragraph, sentence group or Q/A item."""
    docs = _countries() + _currencies_languages_scripts() + _us_states() + _stdlib_docstrings()
    # The templated general items are few; repeating them keeps them from drowning in the tables.
    docs += _general() * 4
    random.Random(seed).shuffle(docs)
    return docs


def corpus_splits(seed: int = 0, heldout_fraction: float = 0.02) -> tuple[list[str], list[str]]:
    """(train, held-out) documents: the last ``heldout_fraction`` of the shuffled corpus is held out."""
    docs = build_corpus(seed)
    n_held = max(1, int(len(docs) * heldout_fraction))
    return docs[:-n_held], docs[-n_held:]
