"""The words of server-side search (Client-Server API, "Server Side Search"), pure.

An event's searchable text and a client's ``search_term`` go through the same
``search_words``, so the database only ever sees plain words of letters and digits
separated by single spaces: SQLite's unicode61 tokenizer and PostgreSQL's 'simple'
parser then split them the same way, and nothing a client types (quotes, FTS operators,
``NEAR``, ``:*``, parentheses) reaches either query language.

Normalisation, for every script: compatibility decomposition (NFKD: Arabic presentation
forms, ligatures, full-width forms), combining marks removed (Latin accents, Arabic and
Persian harakat), case folded. Persian: Arabic yeh and alef maksura are the Persian yeh,
Arabic kaf the Persian keheh (keyboards differ in which they type), tatweel is dropped,
a zero-width non-joiner separates words (as a space does), Persian and
Arabic-Indic digits are ASCII digits.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Final

# The keys clients may search (search.yaml, ``keys``), and the event type each belongs to.
SEARCH_KEYS: Final[Mapping[str, str]] = {
    "content.body": "m.room.message",
    "content.name": "m.room.name",
    "content.topic": "m.room.topic",
}
# A search term is cut to its first this many distinct words (as Synapse bounds it).
MAX_TERMS: Final = 32
# Longer "words" (base64 blobs, long URLs' parts) are not indexed nor searched.
MAX_WORD_LENGTH: Final = 100

_WORD = re.compile(r"[^\W_]+")
_PERSIAN = str.maketrans(
    {
        "\u064a": "\u06cc",  # Arabic yeh -> Persian yeh
        "\u0649": "\u06cc",  # alef maksura -> Persian yeh
        "\u0643": "\u06a9",  # Arabic kaf -> keheh
        "\u0640": None,  # tatweel
        "\u200c": " ",  # zero-width non-joiner
        **{chr(0x06F0 + d): str(d) for d in range(10)},  # Persian digits
        **{chr(0x0660 + d): str(d) for d in range(10)},  # Arabic-Indic digits
    }
)


def search_words(text: str) -> list[str]:
    """The normalised words of ``text``, in order (repeats kept)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_PERSIAN))
    bare = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return [w for w in _WORD.findall(bare.casefold()) if len(w) <= MAX_WORD_LENGTH]


def searchable_text(event_type: str, content: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(key, indexed text)`` of an event, or None: only ``m.room.message`` bodies,
    ``m.room.name`` names and ``m.room.topic`` topics are searched (encrypted events,
    ``m.room.encrypted``, have no text the server can read)."""
    for key, key_type in SEARCH_KEYS.items():
        if event_type == key_type:
            value = content.get(key.removeprefix("content."))
            if not isinstance(value, str):
                return None
            words = search_words(value)
            return (key, " ".join(words)) if words else None
    return None


def search_terms(search_term: str) -> tuple[str, ...]:
    """A client's ``search_term`` as at most ``MAX_TERMS`` distinct words, all of which a
    result must contain (each as a word or a word's beginning)."""
    return tuple(dict.fromkeys(search_words(search_term)))[:MAX_TERMS]
