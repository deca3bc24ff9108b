"""Masking secrets in rendered context, in logs and (unless allowed) in stored events.

A `Redactor` replaces secrets with `[REDACTED]` (or `[REDACTED:<label>]`). Built in:

* API keys with well-known prefixes (OpenAI `sk-...`, Anthropic `sk-ant-...`, GitHub
  `ghp_...`/`github_pat_...`, Slack `xox?-...`, AWS `AKIA...`, Google `AIza...`, Stripe
  `sk_live_...`/`rk_live_...`) and JSON Web Tokens;
* `Authorization: Bearer <token>` / `Basic <token>` values;
* passwords in URLs (`scheme://user:password@host`: the password only);
* `password=...`, `secret: ...`, `api_key=...`, `token=...` assignments.

Agents add their own through `ContextSettings(redact=...)`: a list of regular expressions
(strings or compiled; the whole match is masked, or group 1 when the pattern has one) and
literal values (`{"patterns": [...], "values": [...]}`), or `False` to switch redaction off.

Where it applies:

* rendering: every block and the system prompt pass through the agent's redactor, so a
  model never sees a secret even when the stored event still holds it;
* logs: `JsonEventLog(redact=Redactor().redact)` masks each line (bootstrap wires it);
* storage: `redact_for_storage(redactor, events)` masks the *inputs* that enter a thread
  from outside (user and human messages, tool results and errors, external events) before
  they are appended, unless `ContextSettings.store_secrets` is true. Model outputs and
  tool calls are never rewritten: the model only ever saw redacted context, and rewriting
  them would break deterministic replay.

Invariant: `redact(redact(x)) == redact(x)`. The built-in patterns run in time linear in
the input: a repeated class that must be followed by a delimiter is possessive (`*+`, `++`)
and starts only where the class does not continue to its left (a lookbehind), so no
start position rescans a run another already scanned (`"x" * 1_000_000` is one pass).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..events import Event

__all__ = [
    "DEFAULT_PATTERNS",
    "MASK",
    "Redactor",
    "redact_for_storage",
    "redactor_from",
    "untrusted",
]

MASK = "[REDACTED]"

DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("url-password", r"(?<![a-zA-Z0-9+.\-])[a-zA-Z0-9+.\-]++://[^\s:/@]++:([^\s@/]++)@"),
    ("bearer", r"(?i:\b(?:bearer|basic|token)\s+)([A-Za-z0-9\-._~+/]{16,}=*)"),
    ("anthropic-key", r"\bsk-ant-[A-Za-z0-9\-_]{16,}"),
    ("openai-key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9\-_]{20,}"),
    ("github-token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
    ("slack-token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("aws-access-key", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    ("google-api-key", r"\bAIza[0-9A-Za-z\-_]{35}"),
    ("stripe-key", r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    (
        "jwt",
        r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}+\.eyJ[A-Za-z0-9_\-]{8,}+\.[A-Za-z0-9_\-]{8,}",
    ),
    (
        "assignment",
        r"(?i:\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token"
        r"|client[_-]?secret)\b[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}{]{4,})",
    ),
)


_NEEDLES: dict[str, tuple[tuple[str, ...], bool]] = {
    "url-password": (("://",), False),
    "bearer": (("bearer", "basic", "token"), True),
    "anthropic-key": (("sk-ant-",), False),
    "openai-key": (("sk-",), False),
    "github-token": (("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), False),
    "slack-token": (("xox",), False),
    "aws-access-key": (("AKIA", "ASIA"), False),
    "google-api-key": (("AIza",), False),
    "stripe-key": (("_live_", "_test_"), False),
    "jwt": (("eyJ",), False),
    "assignment": (("passw", "pwd", "secret", "api", "token"), True),
}
"""For each default pattern, substrings one of which every match contains (True: in the
lower-cased text, for a case-insensitive pattern). A pattern runs only when one is there:
a regex scan costs ~40 ns per character and pattern, a substring test almost nothing, and
most text holds no secret. A case-insensitive pattern also matches the four non-ASCII
letters that `re` takes for ASCII ones (U+0130, U+0131, U+017F, U+212A: dotted and dotless
i, long s, Kelvin sign); three of them do not lower to that letter alone, so text holding
one of those (`_UNFOLDED`) runs the case-insensitive patterns whatever it holds."""

_UNFOLDED = ("\u0130", "\u0131", "\u017f")
"""The letters `re.IGNORECASE` matches with an ASCII letter that `str.lower` does not turn
into it (found by trying every code point against every ASCII letter)."""

_Screened = tuple[re.Pattern[str], tuple[str, ...] | None, bool]

_SHORT = 40
"""Below this many characters the needles are screened by one search of an alternation
(5,000 instructions for 19 characters, against 10,000 for a substring test per needle);
above it the tests win (`re` tries the alternation at every position, ~165 instructions a
character, where a substring test scans in C)."""


class Redactor:
    """Masks secrets in text and in JSON-like values.

    Args:
        patterns: extra regular expressions; group 1 is masked when present, else the match.
        values: literal secrets to mask wherever they appear (e.g. keys from settings).
        defaults: include `DEFAULT_PATTERNS`.
        mask: the replacement text.
    """

    def __init__(
        self,
        patterns: Iterable[str | re.Pattern[str]] = (),
        values: Iterable[str] = (),
        *,
        defaults: bool = True,
        mask: str = MASK,
    ) -> None:
        compiled: list[_Screened] = []
        if defaults:
            for label, source in DEFAULT_PATTERNS:
                needles, folded = _NEEDLES.get(label, (None, False))
                compiled.append((re.compile(source), needles, folded))
        for p in patterns:
            try:
                compiled.append((p if isinstance(p, re.Pattern) else re.compile(p), None, False))
            except re.error as exc:
                raise ConfigError(f"redaction pattern {p!r} is not a valid regex: {exc}") from None
        literal = sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)
        if literal:
            joined = re.compile("|".join(re.escape(v) for v in literal))
            compiled.append((joined, tuple(literal), False))
        self._patterns = compiled
        self._mask = mask
        self._screen: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._short_screen: re.Pattern[str] | None = None
        if all(needles is not None for _, needles, _ in compiled):
            sensitive = {n for _, needles, folded in compiled if not folded for n in needles or ()}
            insensitive = {n for _, needles, folded in compiled if folded for n in needles or ()}
            self._screen = (tuple(sorted(sensitive)), tuple(sorted(insensitive)))
            # Every needle lowered, in one alternation searched in the lowered text: a
            # needle in the text is in it lowered (a screen may say yes wrongly, never no).
            self._short_screen = _alternation({n.lower() for n in sensitive | insensitive})

    def _sub(self, match: re.Match[str]) -> str:
        if match.re.groups and match.group(1) is not None:
            start, end = match.span(1)
            whole = match.group(0)
            offset = match.start(0)
            return whole[: start - offset] + self._mask + whole[end - offset :]
        return self._mask

    def redact(self, text: str) -> str:
        """`text` with every secret masked."""
        # A case-sensitive pattern's needle is in every match whatever the text; a
        # case-insensitive one's in the lower-cased text unless it holds a letter that
        # matches an ASCII one without lowering to it (see `_NEEDLES`). Masks are ASCII,
        # so what holds of the text holds of it masked.
        folds = text.isascii() or not any(c in text for c in _UNFOLDED)
        lowered = None
        screen = self._screen
        if screen is not None and folds:
            if not text:
                return text  # no needle in it, so no pattern can match
            # Every pattern has needles, and most text holds none of them: one pass over
            # all the needles tells, instead of a pass per pattern.
            if len(text) < _SHORT and self._short_screen is not None:
                lowered = text.lower()
                if self._short_screen.search(lowered) is None:
                    return text
            else:
                sensitive, insensitive = screen
                for needle in sensitive:
                    if needle in text:
                        break
                else:
                    lowered = text.lower()
                    for needle in insensitive:
                        if needle in lowered:
                            break
                    else:
                        return text
        for pattern, needles, folded in self._patterns:
            if needles is not None and (folds or not folded):
                hay = text
                if folded:
                    hay = lowered = lowered if lowered is not None else text.lower()
                for needle in needles:
                    if needle in hay:
                        break
                else:
                    continue  # no match can be here: skip the scan
            masked = pattern.sub(self._sub, text)
            if masked != text:
                text, lowered = masked, None
        return text

    def __call__(self, text: str) -> str:
        return self.redact(text)

    def redact_value(self, value: Any) -> Any:
        """A JSON-like value with every string redacted (keys included)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self.redact(str(k)): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(v) for v in value]
        return value


def _alternation(needles: set[str]) -> re.Pattern[str]:
    """A pattern matching any of `needles`, grouped by first character (`re` then tests
    one character per group at each position, not every needle)."""
    groups: dict[str, list[str]] = {}
    for needle in sorted(needles, key=len, reverse=True):
        groups.setdefault(needle[0], []).append(re.escape(needle[1:]))
    branches = [f"{re.escape(c)}(?:{'|'.join(rest)})" for c, rest in sorted(groups.items())]
    return re.compile("|".join(branches))


def redactor_from(spec: object) -> Redactor | None:
    """The redactor a `ContextSettings.redact` value describes (None when switched off).

    Raises:
        ConfigError: `spec` is none of True, False, a list of patterns, a mapping
            `{patterns, values, defaults}` or a `Redactor`.
    """
    if spec is False:
        return None
    if isinstance(spec, Redactor):
        return spec
    if spec is True or spec is None:
        return Redactor()
    if isinstance(spec, Mapping):
        return Redactor(
            spec.get("patterns", ()),
            spec.get("values", ()),
            defaults=bool(spec.get("defaults", True)),
        )
    if isinstance(spec, list | tuple):
        return Redactor(spec)
    raise ConfigError(
        "ContextSettings.redact must be True, False, a list of patterns, "
        "a mapping {patterns, values} or a Redactor"
    )


def untrusted(events: Sequence[Event]) -> bool:
    """Whether any of `events` has fields holding outside input (a loop, not `any()` of a
    generator: this runs on every append)."""
    for event in events:  # noqa: SIM110
        if event.traits.untrusted:
            return True
    return False


def redact_for_storage(redactor: Redactor | None, events: Sequence[Event]) -> list[Event]:
    """`events` with secrets masked in the fields that hold outside input (each event
    class names them: `EventTraits.untrusted`).

    `redactor` is the agent's storage redactor (`ContextSettings.storage_redactor`: None
    when the agent stores secrets or switched redaction off). Returns the same event
    objects when nothing needed masking.
    """
    if redactor is None or not untrusted(events):
        return list(events)
    out: list[Event] = []
    for event in events:
        fields = event.traits.untrusted
        if fields:
            update = {}
            for name in fields:
                old = getattr(event, name)
                new = redactor.redact_value(old)
                if new != old:
                    update[name] = new
            if update:
                event = event.model_copy(update=update)
        out.append(event)
    return out
