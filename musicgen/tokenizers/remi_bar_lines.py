"""``BarLinesREMI``: MidiTok's REMI encoder with a Bar token at every bar line (``RemiTokenizer``'s
``rests_cross_bars=False``)."""

from __future__ import annotations

import miditok
from miditok import Event
from miditok.constants import TIME_SIGNATURE


class BarLinesREMI(miditok.REMI):
    """``miditok.REMI`` whose every bar line up to the last note has its Bar token.

    MidiTok writes a rest that reaches or crosses a bar line as Rest tokens alone (the bars it
    passes get no Bar token), so the token stream hides where those bars start: bar infilling could
    not cut there. Here a run of Rest tokens that reaches a bar line not yet marked is written as
    the Bar tokens of the lines it reaches instead (each with its TimeSig when the tokeniser writes
    time signatures), and the Position token MidiTok writes next places the following note; a rest
    inside one bar stays Rest tokens. Decoding is MidiTok's own: Bar moves time to the next bar
    line, so every note decodes at the same tick as before (tested), and the vocabulary is the
    same (the V6 362 tokens). ``RemiTokenizer(rests_cross_bars=False)`` uses it; tokeniser files
    written without that option keep MidiTok's encoding.
    """

    def _add_time_events(self, events: list[Event], time_division: int) -> list[Event]:
        out = super()._add_time_events(events, time_division)
        sig = next((self._parse_token_time_signature(e.value) for e in events if e.type_ == "TimeSig"), TIME_SIGNATURE)
        res: list[Event] = []
        bar_tick: int | None = None  # the tick of the last bar line written (None: none yet)
        i = 0
        while i < len(out):
            e = out[i]
            if e.type_ != "Rest":
                if e.type_ == "Bar":
                    bar_tick = e.time
                elif e.type_ == "TimeSig":
                    sig = self._parse_token_time_signature(e.value)
                res.append(e)
                i += 1
                continue
            ticks_per_bar, ticks_per_beat, _ = self._compute_ticks_per_units(e.time, sig, time_division)
            j, end = i, e.time
            while j < len(out) and out[j].type_ == "Rest":  # the run of rests and where it ends
                end += self._tpb_rests_to_ticks[ticks_per_beat][out[j].value]
                j += 1
            lines = []  # bar lines the rests reach that have no Bar token yet
            if bar_tick is None:  # a piece that starts with a rest: bar 0 first
                lines.append(0)
                bar_tick = 0
            line = bar_tick + ticks_per_bar
            while line <= end:
                lines.append(line)
                line += ticks_per_bar
            if not lines:  # a rest inside one bar stays as MidiTok wrote it
                res.extend(out[i:j])
            else:
                ts_next = j < len(out) and out[j].type_ == "TimeSig" and out[j].time == lines[-1]
                for k, tick in enumerate(lines):
                    res.append(Event(type_="Bar", value="None", time=tick, desc=0))
                    if self.config.use_time_signatures and not (ts_next and k == len(lines) - 1):
                        res.append(Event(type_="TimeSig", value=f"{sig[0]}/{sig[1]}", time=tick, desc=0))
                bar_tick = lines[-1]
            i = j
        return res
