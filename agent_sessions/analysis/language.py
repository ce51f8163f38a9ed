"""A small stop-word language guesser for user messages (no model, no dependency).

Each supported language has a list of its most frequent function words; a text is attributed to
the language whose words it contains most often, provided it contains at least `min_hits` of them
and no other language ties. Good enough to notice that a user keeps writing in French; not a
general-purpose identifier (short or mixed texts give None).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["SUPPORTED_LANGUAGES", "detect_language"]

_WORDS: Final[dict[str, str]] = {
    "en": (
        "the and is are was were to of in that it for on with as this be have has not you i my "
        "what how can could would please thanks do does"
    ),
    "fr": (
        "le la les et est sont des du un une que qui pour dans pas sur avec ce cette je tu vous nous "
        "mon ma mes merci bonjour est-ce peux pouvez"
    ),
    "de": (
        "der die das und ist sind nicht ein eine zu mit für auf den dem ich du sie wir mein meine "
        "bitte danke wie kann können"
    ),
    "es": (
        "el la los las y es son que de en un una por para con no lo mi mis yo tú usted gracias cómo puedo puede hola"
    ),
    "it": "il lo la gli le e è sono che di in un una per con non mi io tu lei grazie come posso può ciao della",
    "pt": "o a os as e é são que de em um uma para com não eu você meu minha obrigado obrigada como posso pode olá",
    "nl": "de het een en is zijn niet dat van in op met voor ik jij u wij mijn bedankt hoe kan kunnen alstublieft",
}

_STOPWORDS: Final = {lang: frozenset(words.split()) for lang, words in _WORDS.items()}

#: Language codes (ISO 639-1) `detect_language` can return.
SUPPORTED_LANGUAGES: Final = tuple(sorted(_STOPWORDS))

_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)?", re.UNICODE)


def detect_language(text: str, *, min_hits: int = 2) -> str | None:
    """The ISO 639-1 code of the language `text` is most likely in, or None when unsure."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return None
    scores = {lang: sum(1 for w in words if w in vocab) for lang, vocab in _STOPWORDS.items()}
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    best, best_score = ranked[0]
    if best_score < min_hits or best_score == ranked[1][1]:
        return None
    return best
