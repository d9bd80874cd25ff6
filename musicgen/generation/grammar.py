"""Grammar-valid decoding: a per-step mask that admits only the tokens that keep a sequence valid.

A grammar is a deterministic automaton over token ids, tabulated once:

    allowed    (S, V) bool: token v keeps a sequence that is in state s valid
    next_state (S, V) long: the state after token v, defined for every token (valid or not)

so one decoding step costs a row lookup (``allowed[state]``, then ``masked_fill`` of the logits)
and a state update (``next_state[state, token]``), batched on the logits' device, whatever the
vocabulary. A sampled token is always admitted, so a sequence that starts valid stays valid; an
invalid token in a prompt moves the state as the tokeniser's own check would read it, and
decoding goes on from there. Every row of ``allowed`` has at least one token (checked when the
tables are built), so the mask never empties.

Grammars (``grammar_for``), each exactly as strict as the tokeniser's ``syntax_errors`` or more:

- REMI (MidiTok 3.1, as configured in conf/tokenizer/remi.yaml): the state is (type of the
  previous base token, current position in the bar), as in MidiTok's ``_tokens_errors``. A token
  type must be one MidiTok's ``tokens_types_graph`` allows after the previous one (Bar -> Bar |
  Position; Position -> Pitch | Chord | Tempo; Chord -> Pitch; Tempo -> Pitch | Chord | Position |
  Bar | Rest; Pitch -> Velocity -> Duration -> Pitch | Position | Bar | Rest; Rest -> Rest |
  Position | Bar | Pitch | Chord | Tempo), and a Position must be later than the current one in
  the bar (reset by Bar). After a Rest any Position is admitted: MidiTok encodes a rest that
  crosses bar lines without Bar tokens, and its check exempts that case too. With time
  signatures (``use_time_signatures``, ``conditioning=full``) every Bar is followed by a TimeSig
  (Bar -> TimeSig -> Position | Pitch | Chord | Rest | Bar), and a Rest -> TimeSig -> Position
  is exempt from the position order as in MidiTok's check (a state type of its own). As in
  MidiTok's check, a Position is not checked against the current time signature's bar length. On top of MidiTok's
  check: a piece starts with Bar or Rest (what MidiTok's encoder writes first), EOS comes only
  after a Duration (a complete note; never on an empty piece), PAD, BOS, UNK and PitchDrum
  (drums are dropped here) never inside a piece, and after EOS only PAD.
- REMI + BPE: a merged token is admitted when its whole base-token expansion is valid from the
  state, and leads to the state after that expansion. Both tables are composed from the base
  automaton's, vectorised over states, one merged token at a time (``_compose``). A token whose
  expansion is empty (the word marker "▁" of the Hugging Face pre-tokeniser, which MidiTok's
  encoder does write, about once in four pieces of the folk corpus, next to a Rest) stands for
  nothing: admitted inside a piece, the state unchanged. Ids after MidiTok's vocabulary (a
  conditioned run's attribute tokens, an infilling run's sentinels) are never admitted.
- pitch strings: any vocabulary token inside a piece, no specials; EOS once a piece has a token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from musicgen.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID

log = logging.getLogger(__name__)

Step = Callable[[int, int], tuple[int, bool]]  # (state, base id) -> (next state, admitted)


class TokenGrammar:
    """A tabulated grammar (see the module docstring). Tables live on one device; ``to`` gives
    a copy on another (cached, so a loop calling it per batch moves the tables once)."""

    def __init__(self, allowed: torch.Tensor, next_state: torch.Tensor, start: int,
                 state_names: Sequence[str] | None = None, name: str = "") -> None:
        if allowed.dim() != 2 or allowed.dtype != torch.bool or next_state.shape != allowed.shape:
            raise ValueError(f"allowed (S, V) bool and next_state (S, V) long, got {tuple(allowed.shape)} "
                             f"{allowed.dtype} and {tuple(next_state.shape)}")
        empty = (~allowed.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            shown = [state_names[s] if state_names else s for s in empty[:5]]
            raise ValueError(f"grammar {name!r}: no token is admitted in states {shown}")
        self.allowed = allowed
        self.next_state = next_state.long()
        self.start = int(start)
        self.state_names = tuple(state_names) if state_names else tuple(map(str, range(allowed.size(0))))
        self.name = name
        self._on: dict[torch.device, TokenGrammar] = {allowed.device: self}

    @property
    def n_states(self) -> int:
        return self.allowed.size(0)

    @property
    def vocab_size(self) -> int:
        return self.allowed.size(1)

    def to(self, device: torch.device | str) -> TokenGrammar:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._on:
            moved = TokenGrammar(self.allowed.to(device), self.next_state.to(device), self.start,
                                 self.state_names, self.name)
            moved._on = self._on
            self._on[device] = moved
        return self._on[device]

    def initial(self, batch_size: int) -> torch.Tensor:
        """The start state of ``batch_size`` rows, (B,) long."""
        return torch.full((batch_size,), self.start, dtype=torch.long, device=self.allowed.device)

    def advance(self, states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """states (B,), ids (B,) -> the states after each row's token."""
        return self.next_state[states, ids.to(states.device)]

    def feed(self, states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """states (B,), ids (B, T) -> the states after every token of each row (a prompt)."""
        for j in range(ids.size(1)):
            states = self.advance(states, ids[:, j])
        return states

    def mask(self, logits: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """logits (B, V) -> the same with every token the grammar rejects in each row's state at -inf."""
        if logits.size(-1) != self.vocab_size:
            raise ValueError(f"grammar {self.name!r} covers {self.vocab_size} tokens, the logits {logits.size(-1)}")
        return logits.masked_fill(~self.allowed[states], float("-inf"))

    def first_rejected(self, ids: Sequence[int], state: int | None = None) -> int | None:
        """Index of the first of ``ids`` the grammar rejects, walking from ``state`` (default: the
        start state), or None if it admits them all."""
        allowed, nxt = self.allowed.cpu(), self.next_state.cpu()
        s = self.start if state is None else int(state)
        for k, t in enumerate(map(int, ids)):
            if not 0 <= t < self.vocab_size or not allowed[s, t]:
                return k
            s = int(nxt[s, t])
        return None


# ----------------------------------------------------------------------------- building tables


def _tabulate(n_states: int, n_base: int, step: Step) -> tuple[np.ndarray, np.ndarray]:
    """The base automaton as tables (S, Vb): next state and admitted."""
    nxt = np.zeros((n_states, n_base), dtype=np.int64)
    ok = np.zeros((n_states, n_base), dtype=bool)
    for s in range(n_states):
        for b in range(n_base):
            nxt[s, b], ok[s, b] = step(s, b)
    return nxt, ok


def _compose(nxt: np.ndarray, ok: np.ndarray, expansions: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Tables (S, V) of tokens that stand for sequences of base tokens (BPE): token v is admitted
    in state s when every base token of its expansion is, from the state the ones before it
    lead to; it leads to the state after the last. A token that stands for nothing is admitted
    everywhere and changes nothing. Vectorised over the S states."""
    n_states = nxt.shape[0]
    rows = np.arange(n_states)
    out_next = np.empty((n_states, len(expansions)), dtype=np.int64)
    out_ok = np.empty((n_states, len(expansions)), dtype=bool)
    for v, expansion in enumerate(expansions):
        s, good = rows, np.ones(n_states, dtype=bool)
        for b in expansion:
            good = good & ok[s, b]
            s = nxt[s, b]
        out_next[:, v], out_ok[:, v] = s, good
    return out_next, out_ok


def _grammar(nxt: np.ndarray, ok: np.ndarray, start: int, names: Sequence[str], name: str) -> TokenGrammar:
    return TokenGrammar(torch.from_numpy(ok), torch.from_numpy(nxt), start, names, name)


# ----------------------------------------------------------------------------- REMI (+ BPE)

_REMI_START_TYPES = ("Bar", "Rest")  # what MidiTok's REMI encoder writes first
_REMI_END_TYPES = ("Duration",)  # a piece ends after a complete note
_REMI_NEVER = ("PitchDrum",)  # drums are dropped before tokenising
_TIMESIG_AFTER_REST = "TimeSig~Rest"  # a state type: a TimeSig token that follows a Rest


def remi_grammar(tokenizer: Any) -> TokenGrammar | None:
    """The grammar of a ``RemiTokenizer`` (REMI or REMI + BPE); None (with the reason logged) for
    a MidiTok configuration whose check needs more state than (type, position)."""
    backend = tokenizer.backend
    cfg = backend.config
    unsupported = [name for name, on in (
        ("use_programs", cfg.use_programs),
        ("use_pitch_intervals", cfg.use_pitch_intervals),
        ("remove_duplicated_notes", cfg.remove_duplicated_notes),
        ("no duration tokens", not cfg.using_note_duration_tokens),
    ) if on]
    if unsupported:
        log.warning("no REMI grammar for this MidiTok configuration (%s)", ", ".join(unsupported))
        return None
    graph = backend.tokens_types_graph
    specials = {t.split("_")[0] for t in cfg.special_tokens}
    types = ["Start", *sorted(t for t in graph if t not in specials)]  # previous-token types of the state
    if "TimeSig" in graph:  # a TimeSig right after a Rest: MidiTok then admits any Position
        types.append(_TIMESIG_AFTER_REST)
    tindex = {t: i for i, t in enumerate(types)}
    base_vocab: dict[str, int] = backend.vocab  # base tokens (str) -> id
    n_base = len(base_vocab)
    kinds, values = [""] * n_base, [0] * n_base
    for token, i in base_vocab.items():
        kind, _, value = token.partition("_")
        kinds[i] = kind
        values[i] = int(value) if kind == "Position" else 0
    n_pos = 1 + max(v for k, v in zip(kinds, values) if k == "Position")
    width = n_pos + 1  # positions -1 (none yet in this bar) .. n_pos - 1
    end = len(types) * width
    n_states = end + 1

    def state(t: str, pos: int) -> int:
        return tindex[t] * width + pos + 1

    start = state("Start", -1)
    names = [f"{t}@{p}" for t in types for p in range(-1, n_pos)] + ["End"]

    def step(s: int, b: int) -> tuple[int, bool]:
        kind = kinds[b]
        if s == end:  # after EOS: padding only; a BOS starts another piece
            return (start, False) if b == BOS_ID else (end, b == PAD_ID)
        prev, pos = types[s // width], s % width - 1
        after_rest = prev in ("Rest", _TIMESIG_AFTER_REST)
        if prev == _TIMESIG_AFTER_REST:
            prev = "TimeSig"
        if b == BOS_ID:
            return start, False
        if b == EOS_ID:
            return end, prev in _REMI_END_TYPES
        if kind in specials or kind not in tindex:  # PAD, UNK: outside MidiTok's check, state kept
            return s, False
        if prev == "Start":  # MidiTok checks the types from the second token on
            return state(kind, values[b] if kind == "Position" else -1), kind in _REMI_START_TYPES
        if kind not in graph[prev]:  # a type error; MidiTok still takes its type as the previous one
            return state(kind, pos), False
        good = kind not in _REMI_NEVER
        if kind == "Bar":
            pos = -1
        elif kind == "Position":
            good = good and (values[b] > pos or after_rest)  # going back (or staying) in time
            pos = values[b]
        elif kind == "TimeSig" and prev == "Rest":
            kind = _TIMESIG_AFTER_REST
        return state(kind, pos), good

    nxt, ok = _tabulate(n_states, n_base, step)
    vocab_size = tokenizer.vocab_size
    if vocab_size > n_base:  # BPE: compose each token's base expansion
        expansions = [[base_vocab[t] for t in tokenizer.tokens([v])] for v in range(vocab_size)]
        nxt, ok = _compose(nxt, ok, expansions)
        ok[end, [v for v, e in enumerate(expansions) if not e]] = False  # nothing after EOS but PAD
        ok[:, len(backend):] = False  # ids after MidiTok's (attribute tokens, infilling's sentinels): never
    return _grammar(nxt, ok, start, names, tokenizer.kind)


# ----------------------------------------------------------------------------- pitch strings


def pitch_grammar(tokenizer: Any) -> TokenGrammar:
    """The grammar of a ``PitchTokenizer``: states Start, Body, End (see the module docstring)."""
    n_special = len({PAD_ID, BOS_ID, EOS_ID, UNK_ID})
    START, BODY, END = 0, 1, 2

    def step(s: int, b: int) -> tuple[int, bool]:
        if b == BOS_ID:
            return START, False
        if b == EOS_ID:
            return END, s == BODY
        if s == END:
            return END, b == PAD_ID
        if b < n_special:  # PAD, UNK
            return s, False
        return BODY, True

    nxt, ok = _tabulate(3, tokenizer.vocab_size, step)
    return _grammar(nxt, ok, START, ["Start", "Body", "End"], tokenizer.kind)


# ----------------------------------------------------------------------------- choosing one

_BUILDERS = {"remi": remi_grammar, "remi_bpe": remi_grammar, "pitch": pitch_grammar}
_warned: set[str] = set()


def grammar_for(tokenizer: Any) -> TokenGrammar | None:
    """The grammar of a tokeniser (by its ``kind``), or None where it has none."""
    builder = _BUILDERS.get(getattr(tokenizer, "kind", ""))
    return builder(tokenizer) if builder is not None else None


def sampling_grammar(tokenizer: Any, sampling: Any) -> TokenGrammar | None:
    """The grammar to decode with: the tokeniser's when ``sampling.constrained``, else None.
    Where the tokeniser has none, constrained decoding is a no-op, said once per kind."""
    if not sampling.constrained:
        return None
    grammar = grammar_for(tokenizer)
    kind = getattr(tokenizer, "kind", type(tokenizer).__name__)
    if grammar is None and kind not in _warned:
        _warned.add(kind)
        log.warning("sampling.constrained=true: the %s tokeniser has no grammar, so decoding is unconstrained",
                    kind)
    return grammar
