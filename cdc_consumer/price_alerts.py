"""Price-move alert rules and their evaluation (pure: no Kafka, no HTTP).

A rules file (YAML) lists rules; each names symbol globs, a window, a threshold in percent, a direction
(`up`, `down` or `either`), an optional minimum 24h quote volume and labels. `PriceMoveEngine` is fed
ticker observations (symbol, event time, last price, quote volume) and returns the alert updates to
deliver: a move *up* is measured from the lowest price inside the window to the newest price, a move
*down* from the highest. All comparisons are exact `Decimal` arithmetic: `(newest - low) * 100 >=
low * threshold`, never a rounded percentage.

Time is the ticker's own event time, not the wall clock, so replaying the same records (after a restart)
rebuilds the same windows and the same `startsAt` of each alert. The wall clock only sets `endsAt`, which
Alertmanager compares with its own clock.
"""

from __future__ import annotations

import bisect
import operator
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal, InvalidOperation
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

ALERT_NAME = "PriceMove"
SOURCE_LABEL = ("source", "cdc-alerts")
RESERVED_LABELS = frozenset({"alertname", "rule", "symbol", "direction", "source"})
DIRECTIONS = ("up", "down", "either")
MAX_RULES_FILE_BYTES = 1 << 20
MAX_RULES = 10_000
MAX_WINDOW_MS = 24 * 3_600_000
_RULE_KEYS = frozenset({"name", "symbols", "window", "threshold_percent", "direction", "min_quote_volume",
                        "labels"})
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_GLOB = re.compile(r"[A-Z0-9*?\[\]!\-_.]{1,40}")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")
_DURATION = re.compile(r"([1-9][0-9]{0,5})(s|m|h)")
_DURATION_MS = {"s": 1000, "m": 60_000, "h": 3_600_000}
# Products of numeric(30,8) prices and thresholds with a few decimals stay far below 60 digits: exact.
_EXACT = Context(prec=60)
_PERCENT_SHOWN = Decimal("0.001")


class RulesError(ValueError):
    """The rules file is unreadable or invalid; the message lists every problem found."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    symbols: tuple[str, ...]
    window_ms: int
    threshold: Decimal  # percent, > 0
    direction: str  # up | down | either
    min_quote_volume: Decimal | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def matches(self, symbol: str) -> bool:
        return any(fnmatchcase(symbol, pattern) for pattern in self.symbols)


# -- rules file ----------------------------------------------------------------------------------------

class _RulesLoader(yaml.SafeLoader):
    """Safe YAML without aliases (no exponential expansion) and with exact decimals instead of floats."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RulesError(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed")
        return super().compose_node(parent, index)


def _exact_float(loader: _RulesLoader, node: yaml.ScalarNode) -> Decimal:
    text = loader.construct_scalar(node).replace("_", "")
    try:
        return Decimal(text)
    except InvalidOperation:
        raise RulesError(f"line {node.start_mark.line + 1}: {text!r} is not a number") from None


_RulesLoader.add_constructor("tag:yaml.org,2002:float", _exact_float)


def parse_duration_ms(text: Any) -> int:
    """`30s`, `5m`, `1h` -> milliseconds (ValueError otherwise)."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h")
    return int(match.group(1)) * _DURATION_MS[match.group(2)]


def load_rules(path: str | Path) -> list[Rule]:
    """Read and validate a rules file; RulesError names the file and every problem in it."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_RULES_FILE_BYTES + 1)
    except OSError as exc:
        raise RulesError(f"rules file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_RULES_FILE_BYTES:
        raise RulesError(f"rules file {path}: larger than {MAX_RULES_FILE_BYTES} bytes")
    try:
        return parse_rules(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RulesError(f"rules file {path}: not UTF-8") from None
    except RulesError as exc:
        raise RulesError(f"rules file {path}: {exc}") from None


def parse_rules(text: str) -> list[Rule]:
    try:
        document = yaml.load(text, Loader=_RulesLoader)  # noqa: S506 - _RulesLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise RulesError(f"not valid YAML: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"rules"}:
        raise RulesError("expected a mapping with one key, `rules:` (a list of rules)")
    entries = document["rules"]
    if not isinstance(entries, list) or not entries:
        raise RulesError("`rules` must be a non-empty list")
    if len(entries) > MAX_RULES:
        raise RulesError(f"more than {MAX_RULES} rules")
    rules, problems, names = [], [], set()
    for number, entry in enumerate(entries, start=1):
        try:
            rule = _rule(entry)
        except ValueError as exc:
            problems.append(f"rule {number}: {exc}")
            continue
        if rule.name in names:
            problems.append(f"rule {number}: name {rule.name!r} is used twice")
        names.add(rule.name)
        rules.append(rule)
    if problems:
        raise RulesError("; ".join(problems))
    return rules


def _rule(entry: Any) -> Rule:
    if not isinstance(entry, dict):
        raise ValueError("must be a mapping")
    unknown = set(map(str, entry)) - _RULE_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {sorted(_RULE_KEYS)})")
    missing = {"name", "symbols", "window", "threshold_percent"} - set(entry)
    if missing:
        raise ValueError(f"missing keys {sorted(missing)}")
    name = entry["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    try:
        return Rule(name, _symbols(entry["symbols"]), _window(entry["window"]),
                    _decimal(entry["threshold_percent"], "threshold_percent", low=Decimal(0), high=Decimal(1000)),
                    _direction(entry.get("direction", "either")),
                    None if entry.get("min_quote_volume") is None else
                    _decimal(entry["min_quote_volume"], "min_quote_volume", low=None, high=None),
                    _labels(entry.get("labels") or {}))
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _symbols(value: Any) -> tuple[str, ...]:
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list) or not patterns:
        raise ValueError("symbols must be a glob or a non-empty list of globs")
    for pattern in patterns:
        if not isinstance(pattern, str) or not _GLOB.fullmatch(pattern):
            raise ValueError(f"symbol glob {pattern!r} must be 1-40 characters of A-Z 0-9 * ? [ ] ! - _ .")
    return tuple(patterns)


def _window(value: Any) -> int:
    window_ms = parse_duration_ms(value)
    if window_ms > MAX_WINDOW_MS:
        raise ValueError(f"window {value!r} is longer than 24h")
    return window_ms


def _decimal(value: Any, what: str, *, low: Decimal | None, high: Decimal | None) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise ValueError(f"{what} {value!r} is not a number")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not number.is_finite() or number < 0 or (low is not None and number <= low) or (high is not None and number > high):
        bounds = f" in ({low}, {high}]" if low is not None else " >= 0"
        raise ValueError(f"{what} {value!r} must be a finite number{bounds}")
    return number


def _direction(value: Any) -> str:
    if value not in DIRECTIONS:
        raise ValueError(f"direction {value!r} must be one of {', '.join(DIRECTIONS)}")
    return value


def _labels(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ValueError("labels must be a mapping of name: value")
    labels = []
    for name, text in value.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"label name {name!r} is not a Prometheus label name")
        if name in RESERVED_LABELS:
            raise ValueError(f"label {name!r} is set by cdc alerts itself")
        if not isinstance(text, (str, int, Decimal)) or isinstance(text, bool) or len(str(text)) > 256:
            raise ValueError(f"label {name!r} value must be a string of at most 256 characters")
        labels.append((name, str(text)))
    return tuple(sorted(labels))


# -- windows -------------------------------------------------------------------------------------------

class Window:
    """Prices of one symbol over the last `window_ms` of event time, with the running low and high.

    Records of one symbol arrive in order within a Kafka partition, but Debezium keys ticker rows by
    (symbol, event_time), so one symbol's rows spread over partitions and interleave out of order (a
    replay or catch-up reads partitions in large chunks). `lows`/`highs` hold the suffix minima/maxima
    (time-ordered, prices strictly increasing/decreasing): an in-order point costs O(1) amortised, a late
    one a binary search and a list splice, never a rebuild; lists stay small (one window of one symbol).
    """

    __slots__ = ("window_ms", "points", "lows", "highs")

    def __init__(self, window_ms: int):
        self.window_ms = window_ms
        self.points: list[tuple[int, Decimal]] = []
        self.lows: list[tuple[int, Decimal]] = []
        self.highs: list[tuple[int, Decimal]] = []

    def add(self, time_ms: int, price: Decimal) -> None:
        points = self.points
        if not points or time_ms > points[-1][0]:
            points.append((time_ms, price))
            _append_extreme(self.lows, time_ms, price, operator.le)
            _append_extreme(self.highs, time_ms, price, operator.ge)
        else:
            self._add_late(time_ms, price)
        oldest_kept = points[-1][0] - self.window_ms
        for queue in (points, self.lows, self.highs):
            if queue[0][0] < oldest_kept:  # usually one point leaves per point added: no search for that
                if len(queue) > 1 and queue[1][0] < oldest_kept:
                    del queue[:bisect.bisect_left(queue, (oldest_kept,))]
                else:
                    del queue[0]

    def _add_late(self, time_ms: int, price: Decimal) -> None:
        index = bisect.bisect_left(self.points, (time_ms,))
        if index < len(self.points) and self.points[index][0] == time_ms:
            # The same row again (an update of it): rare, so rebuild the extremes from the points.
            self.points[index] = (time_ms, price)
            self.lows, self.highs = [], []
            for point_time, point_price in self.points:
                _append_extreme(self.lows, point_time, point_price, operator.le)
                _append_extreme(self.highs, point_time, point_price, operator.ge)
            return
        self.points.insert(index, (time_ms, price))
        _insert_extreme(self.lows, time_ms, price, operator.le)
        _insert_extreme(self.highs, time_ms, price, operator.ge)

    @property
    def newest(self) -> tuple[int, Decimal]:
        return self.points[-1]

    @property
    def low(self) -> Decimal:
        return self.lows[0][1]

    @property
    def high(self) -> Decimal:
        return self.highs[0][1]


def _append_extreme(queue: list, time_ms: int, price: Decimal, covers) -> None:
    """Append the newest point; drop older ones it covers (a later price as low/high makes them moot)."""
    while queue and covers(price, queue[-1][1]):
        queue.pop()
    queue.append((time_ms, price))


def _insert_extreme(queue: list, time_ms: int, price: Decimal, covers) -> None:
    """Insert a late point unless a later one covers it, and drop the earlier ones it covers."""
    index = bisect.bisect_left(queue, (time_ms,))
    if index < len(queue) and covers(queue[index][1], price):
        return
    start = index
    while start > 0 and covers(price, queue[start - 1][1]):
        start -= 1
    queue[start:index] = [(time_ms, price)]


# -- evaluation ----------------------------------------------------------------------------------------

@dataclass(slots=True)
class ActiveAlert:
    starts_at_ms: int
    sent_at_ms: int  # wall clock of the last push (or of its replay)
    ends_at_ms: int


@dataclass(frozen=True, slots=True)
class AlertUpdate:
    """One alert to push: `state` is firing (new), refresh (still true, endsAt extended) or resolved."""

    state: str
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    starts_at_ms: int
    ends_at_ms: int

    def to_api(self) -> dict[str, Any]:
        """The Alertmanager API v2 body of this alert."""
        return {"labels": dict(self.labels), "annotations": dict(self.annotations),
                "startsAt": iso_ms(self.starts_at_ms), "endsAt": iso_ms(self.ends_at_ms)}


def iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_labels(rule: Rule, symbol: str, direction: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((("alertname", ALERT_NAME), ("rule", rule.name), ("symbol", symbol),
                         ("direction", direction), SOURCE_LABEL, *rule.labels)))


@dataclass(frozen=True, slots=True)
class _Check:
    """One rule and direction applied to one symbol, prepared once: its alert key and comparison factor.

    A move up holds when `newest * 100 >= low * (100 + threshold)`, down when
    `newest * 100 <= high * (100 - threshold)`: products only, computed in a 60-digit context, so exact.
    """

    rule: Rule
    key: tuple[tuple[str, str], ...]
    factor: Decimal


def _checks(rules: list[Rule], symbol: str) -> tuple[tuple[_Check, ...], tuple[_Check, ...]]:
    """The up and down checks of rules sharing a window, easiest threshold first."""
    ups = [_Check(r, alert_labels(r, symbol, "up"), 100 + r.threshold) for r in rules if r.direction != "down"]
    downs = [_Check(r, alert_labels(r, symbol, "down"), 100 - r.threshold) for r in rules if r.direction != "up"]
    return (tuple(sorted(ups, key=lambda c: c.rule.threshold)), tuple(sorted(downs, key=lambda c: c.rule.threshold)))


class PriceMoveEngine:
    """Per-symbol windows and the set of alerts currently active.

    `observe()` returns the updates to deliver for one ticker observation. An alert is *firing* the first
    time its condition holds, *refreshed* (same startsAt, later endsAt) at most every `resend_ms` while it
    keeps holding, and *resolved* (endsAt = now) when it stops holding. endsAt is `hold_ms` past the last
    push, so Alertmanager resolves an alert by itself if `cdc alerts` goes away.
    """

    def __init__(self, rules: Iterable[Rule], *, resend_ms: int = 30_000, hold_ms: int | None = None):
        self.rules = tuple(rules)
        self.rule_names = frozenset(rule.name for rule in self.rules)
        self.resend_ms = resend_ms
        self.hold_ms = hold_ms if hold_ms is not None else 4 * resend_ms
        self.max_window_ms = max((rule.window_ms for rule in self.rules), default=0)
        # symbol -> its windows (one per distinct window length), each with the up and down checks reading it
        self.plans: dict[str, list[tuple[Window, tuple[_Check, ...], tuple[_Check, ...]]]] = {}
        self.active: dict[tuple[tuple[str, str], ...], ActiveAlert] = {}
        self.active_per_symbol: Counter[str] = Counter()

    def reset(self) -> None:
        """Forget every window (before a replay); active alerts are kept so nothing re-fires."""
        self.plans.clear()

    def adopt(self, labels: Mapping[str, str], starts_at_ms: int, ends_at_ms: int, now_ms: int) -> None:
        """An alert Alertmanager already holds as active: refresh it later instead of firing it again."""
        if labels.get("rule") not in self.rule_names:
            return  # another rules file's alert (or a rule since removed): not ours to refresh
        key = tuple(sorted(labels.items()))
        if key not in self.active:
            self._activate(key, ActiveAlert(starts_at_ms, now_ms, ends_at_ms))

    def _plan(self, symbol: str) -> list[tuple[Window, tuple[_Check, ...], tuple[_Check, ...]]]:
        plan = self.plans.get(symbol)
        if plan is None:
            by_window: dict[int, list[Rule]] = {}
            for rule in self.rules:
                if rule.matches(symbol):
                    by_window.setdefault(rule.window_ms, []).append(rule)
            plan = self.plans[symbol] = [(Window(ms), *_checks(rules, symbol)) for ms, rules in by_window.items()]
        return plan

    def observe(self, symbol: str, time_ms: int, price: Decimal, quote_volume: Decimal | None,
                now_ms: int) -> list[AlertUpdate]:
        updates: list[AlertUpdate] = []
        active_here = self.active_per_symbol[symbol] > 0
        for window, ups, downs in self._plan(symbol):
            window.add(time_ms, price)
            newest_ms, newest = window.points[-1]
            low, high = window.lows[0][1], window.highs[0][1]
            scaled = _EXACT.multiply(newest, 100)
            # Checks are sorted from the easiest threshold: once one fails, the stricter ones fail too, so
            # a quiet symbol costs two multiplications per window, whatever the number of rules. Checks with
            # an active alert are always visited, so they can be resolved.
            for checks, reference, holds_at in ((ups, low, scaled.__ge__), (downs, high, scaled.__le__)):
                failed = False
                for check in checks:
                    key = check.key
                    if failed and key not in self.active:
                        continue
                    minimum = check.rule.min_quote_volume
                    eligible = minimum is None or (quote_volume is not None and quote_volume >= minimum)
                    holds = not failed and eligible and holds_at(_EXACT.multiply(reference, check.factor))
                    failed = failed or (eligible and not holds)
                    if holds or key in self.active:
                        self._transition(check, holds, reference, newest, newest_ms, now_ms, updates)
                    if failed and not active_here:
                        break
        return updates

    def _transition(self, check: _Check, holds: bool, reference: Decimal, newest: Decimal, newest_ms: int,
                    now_ms: int, updates: list[AlertUpdate]) -> None:
        key = check.key
        active = self.active.get(key)
        if not holds:
            assert active is not None, "a check that does not hold is visited only for an active alert"
            self._deactivate(key)
            updates.append(AlertUpdate("resolved", key, (), active.starts_at_ms, now_ms))
            return
        if active is not None and now_ms - active.sent_at_ms < self.resend_ms:
            return
        starts_at_ms = active.starts_at_ms if active is not None else newest_ms
        self._activate(key, ActiveAlert(starts_at_ms, now_ms, now_ms + self.hold_ms))
        window = _window_text(check.rule.window_ms)
        change = _EXACT.quantize(_EXACT.divide(_EXACT.multiply(_EXACT.subtract(newest, reference), 100), reference),
                                 _PERCENT_SHOWN)
        annotations = (("change_percent", str(change)), ("from_price", str(reference)), ("to_price", str(newest)),
                       ("threshold_percent", str(check.rule.threshold)), ("window", window),
                       ("summary", f"{dict(key)['symbol']} moved {change}% within {window}"))
        updates.append(AlertUpdate("refresh" if active is not None else "firing", key, annotations, starts_at_ms,
                                   now_ms + self.hold_ms))

    def expire(self, now_ms: int) -> None:
        """Drop alerts whose endsAt passed without a refresh (Alertmanager has resolved them itself)."""
        for key in [key for key, alert in self.active.items() if alert.ends_at_ms <= now_ms]:
            self._deactivate(key)

    def _activate(self, key, alert: ActiveAlert) -> None:
        if key not in self.active:
            self.active_per_symbol[dict(key)["symbol"]] += 1
        self.active[key] = alert

    def _deactivate(self, key) -> None:
        del self.active[key]
        self.active_per_symbol[dict(key)["symbol"]] -= 1


def _window_text(window_ms: int) -> str:
    for unit, size in (("h", 3_600_000), ("m", 60_000)):
        if window_ms % size == 0:
            return f"{window_ms // size}{unit}"
    return f"{window_ms // 1000}s"
