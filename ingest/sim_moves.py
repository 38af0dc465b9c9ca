"""Scripted price moves for the simulator: `--move BTCUSDT:+6%:60s` (or `POST /__sim/moves`).

A move takes one symbol's price from where it stands when the move starts to `start * (1 + percent/100)`
in a straight line over `seconds` of market time; the random walk keeps trading around that path (a few
ticks either way), and the symbol trades on every step while it moves, so each poll sees a new ticker.
The target is rounded to the symbol's tick. An optional `@Ns` delays the start by N seconds of market time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

_SPEC = re.compile(r"(?P<symbol>[A-Z0-9\-_.]{1,20}):(?P<percent>[+-](?:[0-9]{1,2}|100)(?:\.[0-9]{1,4})?)%"
                   r":(?P<seconds>[0-9]{1,5})s(?:@(?P<delay>[0-9]{1,5})s)?")


@dataclass(frozen=True)
class PriceMove:
    symbol: str
    percent: Decimal  # signed, -100 < percent <= 100
    duration_ms: int
    delay_ms: int = 0

    @classmethod
    def parse(cls, text: object) -> PriceMove:
        """`SYMBOL:+6%:60s[@10s]`; ValueError (with the accepted form) for anything else."""
        match = _SPEC.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"move {text!r} is not SYMBOL:+P%:Ns[@Ns] (e.g. BTCUSDT:+6%:60s, ETHUSDT:-3.5%:30s@10s)")
        percent, seconds = Decimal(match["percent"]), int(match["seconds"])
        if percent <= -100 or percent == 0 or seconds == 0:
            raise ValueError(f"move {text!r}: the percentage must be non-zero and above -100, the duration > 0s")
        return cls(match["symbol"], percent, seconds * 1000, int(match["delay"] or 0) * 1000)


@dataclass
class _Running:
    move: PriceMove
    start_ms: int
    start_price: Decimal | None = None


class ScriptedMoves:
    """The moves of one market; `apply()` runs before each market step (under the server's lock)."""

    def __init__(self) -> None:
        self.running: list[_Running] = []

    def add(self, move: PriceMove, now_ms: int) -> None:
        self.running.append(_Running(move, now_ms + move.delay_ms))

    def moving(self, now_ms: int) -> set[str]:
        return {r.move.symbol for r in self.running if r.start_ms <= now_ms}

    def apply(self, states: dict, now_ms: int) -> None:
        """Put each moving symbol's price on its path for `now_ms`; finished moves are dropped."""
        for running in list(self.running):
            if now_ms < running.start_ms:
                continue
            state = states[running.move.symbol]
            if running.start_price is None:
                running.start_price = state.price
            progress = min(Decimal(now_ms - running.start_ms) / running.move.duration_ms, Decimal(1))
            with localcontext() as ctx:
                ctx.prec = 60
                target = running.start_price * (1 + running.move.percent * progress / 100)
                state.price = max(state.tick * 10, target.quantize(state.tick, rounding=ROUND_HALF_EVEN))
            if progress == 1:
                self.running.remove(running)
