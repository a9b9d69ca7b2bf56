"""Spam and phishing score: explainable signals combined into one number in [0, 1].

Each signal is a fact an operator can check by reading the message (a link to a bare IP
address, a shortened link, "verify your password"), with a weight that says how strongly it
points to phishing on its own. Signals are combined as a noisy-OR, 1 - Π(1 - w): one weak
signal stays low, several independent ones add up, and the score never exceeds 1. The
signals are the indicators anti-phishing reports and mail filters use — IP-literal and
look-alike (IDN) hosts, deceptive link text, shorteners hiding the target, urgency,
credential requests and prize claims (the Anti-Phishing Working Group's trends reports;
SpamAssassin's `NUMERIC_HTTP_ADDR` and `URI_*` rules); the weights are ours, tuned on
tests/data/spam.tsv.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

# Weights: how strongly each signal alone suggests phishing.
WEIGHTS = {
    "ip_literal_link": 0.6,
    "punycode_link": 0.5,
    "link_text_mismatch": 0.6,
    "url_shortener": 0.4,
    "urgency": 0.35,
    "credential_request": 0.5,
    "prize_claim": 0.45,
    "all_caps": 0.3,
}

# Link shorteners hide where a link goes (a common phishing wrapper).
SHORTENERS = frozenset({
    "bit.ly", "bitly.com", "tinyurl.com", "t.co", "goo.gl", "ow.ly", "is.gd", "buff.ly",
    "rebrand.ly", "cutt.ly", "shorturl.at", "tiny.cc", "t.ly", "rb.gy", "s.id", "v.gd",
    "bl.ink", "short.io", "lnkd.in", "qrco.de",
})

# Phrases by language (lower case; matched as substrings of the lower-cased text). English
# is always checked too: phishing aimed at other languages often keeps English phrases.
URGENCY = {
    "en": ("urgent", "immediately", "act now", "within 24 hours", "within 48 hours",
           "will be suspended", "has been suspended", "will be closed", "final notice",
           "last warning", "expires today", "action required"),
    "fr": ("urgent", "immédiatement", "dans les 24 heures", "dans les 48 heures",
           "sera suspendu", "a été suspendu", "sera bloqué", "dernier avertissement",
           "sans délai", "action requise"),
    "de": ("dringend", "sofort", "innerhalb von 24 stunden", "innerhalb von 48 stunden",
           "wird gesperrt", "wurde gesperrt", "letzte mahnung", "letzte warnung",
           "handlungsbedarf"),
    "es": ("urgente", "inmediatamente", "en 24 horas", "en las próximas 24 horas",
           "será suspendida", "ha sido suspendida", "será bloqueada", "último aviso",
           "acción requerida"),
    "it": ("urgente", "immediatamente", "entro 24 ore", "sarà sospeso", "è stato sospeso",
           "sarà bloccato", "ultimo avviso", "azione richiesta"),
    "pt": ("urgente", "imediatamente", "em 24 horas", "será suspensa", "foi suspensa",
           "será bloqueada", "último aviso", "ação necessária"),
    "nl": ("dringend", "onmiddellijk", "binnen 24 uur", "wordt geblokkeerd",
           "is geblokkeerd", "laatste waarschuwing", "actie vereist"),
    "pl": ("pilne", "natychmiast", "w ciągu 24 godzin", "zostanie zablokowane",
           "zostało zablokowane", "zostanie zawieszone", "ostatnie ostrzeżenie",
           "wymagane działanie"),
    "sv": ("brådskande", "omedelbart", "inom 24 timmar", "kommer att spärras",
           "har spärrats", "kommer att stängas", "sista varningen", "åtgärd krävs"),
    "tr": ("acil", "hemen", "24 saat içinde", "askıya alınacak", "askıya alındı",
           "kapatılacak", "engellenecek", "son uyarı", "işlem gerekli"),
    "ru": ("срочно", "немедленно", "в течение 24 часов", "будет заблокирован",
           "был заблокирован", "будет приостановлен", "последнее предупреждение",
           "требуется действие"),
    "ar": ("عاجل", "فورا", "فوراً", "خلال 24 ساعة", "سيتم تعليق", "تم تعليق", "سيتم إغلاق",
           "سيتم حظر", "تحذير أخير", "إجراء مطلوب"),
    "ja": ("緊急", "至急", "直ちに", "24時間以内", "停止されます", "凍結されます",
           "停止されました", "ロックされました", "最終警告", "対応が必要"),
    "zh": ("紧急", "立即", "24小时内", "将被冻结", "已被冻结", "将被停用", "将被关闭",
           "最后警告", "需要采取行动"),
    "ko": ("긴급", "즉시", "24시간 이내", "정지됩니다", "정지되었습니다", "차단됩니다",
           "잠금", "최종 경고", "조치가 필요"),
}
CREDENTIALS = {
    "en": ("verify your account", "verify your identity", "confirm your identity",
           "confirm your password", "verify your password", "enter your password",
           "your password and", "confirm your account", "confirm your login",
           "login details", "log in to verify", "confirm your card", "card number and",
           "social security number", "your pin", "bank details", "security code"),
    "fr": ("vérifiez votre compte", "vérifier votre compte", "confirmez votre mot de passe",
           "saisissez votre mot de passe", "vos identifiants", "confirmer votre identité",
           "coordonnées bancaires", "code de sécurité"),
    "de": ("bestätigen sie ihr konto", "verifizieren sie ihr konto", "passwort bestätigen",
           "geben sie ihr passwort", "zugangsdaten", "identität bestätigen", "bankdaten",
           "sicherheitscode"),
    "es": ("verifique su cuenta", "verifica tu cuenta", "confirme su contraseña",
           "confirma tu contraseña", "datos bancarios", "credenciales",
           "confirme su identidad", "código de seguridad"),
    "it": ("verifica il tuo account", "verificare il tuo account", "conferma la tua password",
           "credenziali", "dati bancari", "conferma la tua identità", "codice di sicurezza"),
    "pt": ("verifique sua conta", "verifique a sua conta", "confirme sua senha",
           "confirme a sua senha", "dados bancários", "credenciais", "código de segurança"),
    "nl": ("verifieer je account", "verifieer uw account", "bevestig je wachtwoord",
           "bevestig uw wachtwoord", "inloggegevens", "bankgegevens", "beveiligingscode"),
    "pl": ("zweryfikuj swoje konto", "potwierdź swoje konto", "potwierdź hasło",
           "podaj hasło", "dane logowania", "dane karty", "kod bezpieczeństwa",
           "potwierdź swoją tożsamość"),
    "sv": ("verifiera ditt konto", "bekräfta ditt konto", "bekräfta ditt lösenord",
           "ange ditt lösenord", "inloggningsuppgifter", "kortuppgifter", "säkerhetskod",
           "bekräfta din identitet"),
    "tr": ("hesabınızı doğrulayın", "hesabını doğrula", "şifrenizi onaylayın",
           "şifrenizi girin", "giriş bilgileriniz", "kart bilgileriniz", "güvenlik kodu",
           "kimliğinizi doğrulayın"),
    "ru": ("подтвердите свой аккаунт", "подтвердите учетную запись", "подтвердите пароль",
           "введите пароль", "данные для входа", "данные карты", "код безопасности",
           "подтвердите личность"),
    "ar": ("تحقق من حسابك", "تأكيد حسابك", "أكد كلمة المرور", "أدخل كلمة المرور",
           "بيانات الدخول", "بيانات البطاقة", "رمز الأمان", "تأكيد هويتك"),
    "ja": ("アカウントを確認", "本人確認", "パスワードを確認", "パスワードを入力",
           "ログイン情報", "カード情報", "暗証番号", "セキュリティコード"),
    "zh": ("验证您的账户", "验证你的账户", "确认您的密码", "输入您的密码", "登录信息",
           "银行卡信息", "安全码", "验证身份"),
    "ko": ("계정을 확인", "계정 인증", "비밀번호를 확인", "비밀번호를 입력", "로그인 정보",
           "카드 정보", "보안 코드", "본인 확인"),
}

PRIZES = {
    "en": ("claim your prize", "claim your reward", "you have won", "you've won", "you won a",
           "free iphone", "lottery", "gift card winner"),
    "fr": ("vous avez gagné", "réclamez votre", "loterie"),
    "de": ("sie haben gewonnen", "gewinn abholen", "lotterie"),
    "es": ("has ganado", "ha ganado", "reclame su premio", "lotería"),
    "it": ("hai vinto", "ha vinto", "riscatta il tuo premio", "lotteria"),
    "pt": ("você ganhou", "ganhou um", "resgate o seu prémio", "loteria"),
    "nl": ("je hebt gewonnen", "u heeft gewonnen", "claim je prijs", "loterij"),
    "pl": ("wygrałeś", "wygrałaś", "odbierz nagrodę", "loteria"),
    "sv": ("du har vunnit", "hämta ditt pris", "lotteri"),
    "tr": ("kazandınız", "ödülünüzü alın", "piyango"),
    "ru": ("вы выиграли", "получите приз", "лотерея"),
    "ar": ("لقد فزت", "استلم جائزتك", "يانصيب"),
    "ja": ("当選しました", "賞品を受け取", "宝くじ"),
    "zh": ("恭喜您中奖", "您已中奖", "领取奖品", "彩票"),
    "ko": ("당첨되었습니다", "경품을 받", "복권"),
}

# A link: scheme (or www.), an optional bracketed IPv6 host (RFC 3986 §3.2.2), the rest.
_URL = re.compile(r"""(?:https?://(?:\[[0-9a-f:.]+\])?|www\.)[^\s<>"'()\[\]|]*""",
                  re.IGNORECASE)
# Link text beside its target: Markdown [text](url), HTML <a href="url">text</a>,
# Slack mrkdwn <url|text>.
_MARKDOWN_LINK = re.compile(r"\[([^\]]{1,200})\]\(([^)\s]{1,2000})\)")
_HTML_LINK = re.compile(r"""<a\s[^>]*href=["']([^"']{1,2000})["'][^>]*>(.{1,200}?)</a>""",
                        re.IGNORECASE | re.DOTALL)
_SLACK_LINK = re.compile(r"<(https?://[^|>\s]{1,2000})\|([^>]{1,200})>")
_DOMAIN = re.compile(r"\b((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})\b",
                     re.IGNORECASE)
# Fewer letters than this and a shout is a word ("OK", "FYI"), not a signal.
_CAPS_MIN_LETTERS = 20
_CAPS_RATIO = 0.6


@dataclass(frozen=True, slots=True)
class SpamVerdict:
    score: float
    reasons: tuple[str, ...]


def spam_verdict(text: str, language: str | None) -> SpamVerdict:
    """Score `text` (title and body together) and say why; `language` picks the phrases."""
    reasons: dict[str, str] = {}
    for host in (_host(url) for url in _URL.findall(text)):
        if not host:
            continue
        if _is_ip_literal(host):
            reasons.setdefault("ip_literal_link", f"ip_literal_link: {host}")
        if any(label.startswith("xn--") for label in host.split(".")) or not host.isascii():
            reasons.setdefault("punycode_link", f"punycode_link: {host}")
        if host in SHORTENERS or host.removeprefix("www.") in SHORTENERS:
            reasons.setdefault("url_shortener", f"url_shortener: {host}")
    for link_text, target in _links(text):
        named = _DOMAIN.search(link_text)
        host = _host(target)
        if named and host and not _same_site(named.group(1).lower(), host):
            reasons.setdefault("link_text_mismatch",
                               f"link_text_mismatch: text names {named.group(1).lower()}, "
                               f"link goes to {host}")
    lowered = text.lower()
    tables = (("urgency", URGENCY), ("credential_request", CREDENTIALS),
              ("prize_claim", PRIZES))
    for kind, table in tables:
        phrase = _first_phrase(lowered, _phrases(table, language))
        if phrase:
            reasons[kind] = f"{kind}: '{phrase}'"
    letters = [c for c in _URL.sub(" ", text) if c.isalpha() and c.isascii()]
    if len(letters) >= _CAPS_MIN_LETTERS:
        ratio = sum(c.isupper() for c in letters) / len(letters)
        if ratio >= _CAPS_RATIO:
            reasons["all_caps"] = f"all_caps: {ratio:.0%} of letters upper case"
    return SpamVerdict(score=combine(reasons), reasons=tuple(reasons.values()))


def combine(signals: Iterable[str]) -> float:
    """Noisy-OR of the signals' weights, rounded to three places."""
    remaining = 1.0
    for signal in signals:
        remaining *= 1.0 - WEIGHTS[signal]
    return round(1.0 - remaining, 3)


def _phrases(table: dict[str, tuple[str, ...]], language: str | None) -> tuple[str, ...]:
    phrases = table["en"]
    if language and language != "en":
        phrases = table.get(language, ()) + phrases
    return phrases


def _first_phrase(text: str, phrases: Iterable[str]) -> str | None:
    return next((p for p in phrases if p in text), None)


def _links(text: str) -> Iterable[tuple[str, str]]:
    for link_text, target in _MARKDOWN_LINK.findall(text):
        yield link_text, target
    for target, link_text in _HTML_LINK.findall(text):
        yield re.sub(r"<[^>]+>", "", link_text), target
    for target, link_text in _SLACK_LINK.findall(text):
        yield link_text, target


def _host(url: str) -> str:
    if url.lower().startswith("www."):
        url = "http://" + url
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # an invalid IPv6 literal, say: still a link, but no host to judge
        return ""
    return host.lower().rstrip(".")


def _is_ip_literal(host: str) -> bool:
    if host.isdigit():  # http://3232235777 is 192.168.1.1 written as one number
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _same_site(named: str, host: str) -> bool:
    """Whether the domain the link text names and the link's host belong to one site.

    Compares the last two labels (example.com) — an approximation of the registrable domain
    that errs towards "same site" for hosts under multi-label suffixes (co.uk), which is
    the safe side for a spam signal.
    """
    def site(name: str) -> str:
        return ".".join(name.removeprefix("www.").split(".")[-2:])

    return site(named) == site(host)
