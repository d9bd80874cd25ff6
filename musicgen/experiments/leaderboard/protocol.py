"""What each leaderboard run is: an entry's training overrides at the board's size, with the
notes budget, and what a finished run says about itself (its curve, whether it converged).

The size rule (``size=small``): every version is shrunk by the same factors, so that what set the
versions apart survives: widths (LSTM hidden sizes and embedding, Transformer d_model and d_ff)
times ``width``, Transformer layers times ``depth`` (the head size kept, so the heads shrink with
d_model), windows (``data.seq_len``, and a causal stride) times ``window``. ``size=full`` has
factors of 1: each version at its own size (for a GPU or a cluster).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from musicgen.errors import ConfigError
from musicgen.training.notes_budget import tail_improvement

#: The callback that holds every run to the same notes of training music (musicgen.training.callbacks).
NOTES_BUDGET = "musicgen.training.notes_budget.NotesBudget"


def compose_train(overrides: list[str]) -> DictConfig:
    """The training config ``musicgen.train`` would compose from ``overrides``."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside the leaderboard's own Hydra main
        return compose("train", overrides=overrides)
    from musicgen.config import compose as compose_outside

    return compose_outside("train", overrides)


def _round(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def size_overrides(train: DictConfig, size: DictConfig) -> list[str]:
    """The overrides that shrink one composed version by the size's factors (none at factor 1)."""
    width, depth, window = float(size.width), float(size.depth), float(size.window)
    m, d = train.model, train.data
    out = []
    if width != 1 and "hidden_sizes" in m:
        out.append(f"model.hidden_sizes=[{','.join(str(_round(h * width, 8)) for h in m.hidden_sizes)}]")
        if m.input_mode == "embedding":
            out.append(f"model.embedding_dim={_round(m.embedding_dim * width, 8)}")
    if "d_model" in m and (width != 1 or depth != 1):
        head = m.d_model // m.n_heads
        d_model = _round(m.d_model * width, head)
        out += [f"model.d_model={d_model}", f"model.n_heads={d_model // head}",
                f"model.d_ff={_round(m.d_ff * width, 8)}", f"model.n_layers={max(1, round(m.n_layers * depth))}"]
    if window != 1:
        out.append(f"data.seq_len={max(8, round(d.seq_len * window))}")
        if train.objective.name != "seq2one":
            out.append(f"data.stride={max(1, round(d.stride * window))}")
    if size.get("batch") and size.batch.get(train.objective.name):
        out += [f"data.batch_size={size.batch[train.objective.name]}", "trainer.accumulate_grad_batches=1"]
    return out


def _entry(cfg: DictConfig, name: str) -> DictConfig:
    if name not in cfg.entries:
        raise ConfigError(f"{name!r} is not an entry; choose from {list(cfg.entries)}")
    e = cfg.entries[name]
    return OmegaConf.create({"overrides": list(e)}) if OmegaConf.is_list(e) else e


def parameter_count(train: DictConfig, vocab_size: int) -> int:
    """Parameters of a composed config's network (built on the meta device: no memory, no time)."""
    import torch
    from hydra.utils import instantiate

    with torch.device("meta"):
        net = instantiate(train.model, vocab_size=vocab_size)
    return sum(p.numel() for p in net.parameters())


def _vocab(train: DictConfig) -> int:
    v = train.tokenizer.get("bpe_vocab_size") or train.model.get("vocab_size")
    if not v:
        raise ConfigError("params_of: the entry's vocabulary size is not fixed by its config (use a BPE tokeniser)")
    return int(v)


def _matched_hidden(overrides: list[str], target: int, vocab: int) -> list[str]:
    """Equal LSTM hidden sizes (multiples of 8) whose network has about ``target`` parameters."""
    base = compose_train(overrides)
    layers = len(base.model.hidden_sizes)

    def count(h: int) -> int:
        return parameter_count(compose_train([*overrides, f"model.hidden_sizes=[{','.join([str(h)] * layers)}]"]),
                               vocab)

    lo, hi = 8, 8
    while count(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 8:
        mid = _round((lo + hi) / 2, 8)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    h = lo if abs(count(lo) - target) <= abs(count(hi) - target) else hi
    return [f"model.hidden_sizes=[{','.join([str(h)] * layers)}]"]


def entry_overrides(cfg: DictConfig, name: str) -> list[str]:
    """One entry's ``musicgen.train`` overrides at the board's size, before seed and budget:
    its own, the size rule, ``window_of`` (the data windows and batch of another entry),
    ``window_scale`` (its window times a factor: equal notes per window across tokenisers) and
    ``params_of`` (LSTM hidden sizes matched to another entry's parameter count), then ``common``,
    ``after_common`` (the entry's own overrides of what ``common`` fixes: its data, for the genre
    claim) and ``extra``."""
    e = _entry(cfg, name)
    own = list(e.overrides)
    mine = list(e.get("after_common") or [])  # what the entry overrides of common (its own data)
    tail = [*cfg.common, *mine, *cfg.extra]
    train = compose_train([*own, *cfg.common, *mine])
    out = [*own, *size_overrides(train, cfg.sizes[cfg.size])]
    if e.get("window_of"):
        ref = compose_train(entry_overrides(cfg, e.window_of))
        out += [f"data.seq_len={ref.data.seq_len}", f"data.stride={ref.data.stride}",
                f"data.batch_size={ref.data.batch_size}",
                f"trainer.accumulate_grad_batches={ref.trainer.accumulate_grad_batches}"]
    if e.get("window_scale"):
        now = compose_train([*out, *tail])
        seq = max(8, round(now.data.seq_len * float(e.window_scale)))
        out += [f"data.seq_len={seq}", f"data.stride={max(1, round(now.data.stride * float(e.window_scale)))}"]
        if "max_seq_len" in now.model and now.model.max_seq_len < seq:
            out.append(f"model.max_seq_len={seq}")
    if e.get("params_of"):
        ref = compose_train(entry_overrides(cfg, e.params_of))
        out += _matched_hidden([*out, *tail], parameter_count(ref, _vocab(ref)), _vocab(ref))
    return [*out, *tail]


def budget_overrides(cfg: DictConfig) -> list[str]:
    """The notes budget, the validations that draw the curves, and early stopping at convergence
    (``budget.stop_after``: from that share of the budget on), the same for every run."""
    b = cfg.budget
    stop = ("" if b.get("stop_after") is None else
            f",stop_tolerance:{b.tolerance},stop_after:{b.stop_after}")
    return [f"+callbacks.notes_budget={{_target_:{NOTES_BUDGET},max_notes:{int(b.notes)},"
            f"validations:{int(b.validations)},warmup_share:{b.warmup_share}{stop}}}"]


# ----------------------------------------------------------------------------- a finished run


def curve(run: Path) -> list[dict[str, float]]:
    """Each validation of a run, from its CSV log: notes seen, FLOPs, training seconds (validation
    left out) and the validation NLL per note (val/loss times the split's tokens per note)."""
    points = []
    for path in sorted(run.rglob("metrics.csv")):
        with path.open() as f:
            for row in csv.DictReader(f):
                if row.get("val/loss") and row.get("budget/notes_seen"):
                    points.append({"notes": float(row["budget/notes_seen"]), "flops": float(row["budget/flops"]),
                                   "seconds": float(row["budget/train_seconds"]),
                                   "nll_per_note": float(row["val/loss"]) * float(row["budget/val_tokens_per_note"])})
    points.sort(key=lambda p: p["notes"])
    return points


def converged(points: list[dict[str, float]], budget_notes: float, tolerance: float = 0.01,
              tail: float = 0.2) -> dict[str, Any]:
    """The convergence rule: over the last ``tail`` of its training (in notes seen) the best
    validation NLL per note improved by less than ``tolerance`` (relative), or the run stopped
    early (early stopping) before its budget. Needs a validation at or before the tail's start."""
    if not points:
        return {"converged": False, "improvement": math.nan, "stopped_early": False, "reason": "no validation"}
    end = points[-1]["notes"]
    step = points[1]["notes"] - points[0]["notes"] if len(points) > 1 else end
    stopped_early = end < budget_notes - 0.5 * step  # a whole run validates within a few steps of its budget
    improvement = tail_improvement([(p["notes"], p["nll_per_note"]) for p in points], tail)
    if math.isnan(improvement):
        return {"converged": stopped_early, "improvement": math.nan, "stopped_early": stopped_early,
                "reason": "no validation before the last fifth"}
    ok = improvement < tolerance or stopped_early
    reason = f"improved {100 * improvement:.2f}% over the last fifth"
    return {"converged": bool(ok), "improvement": float(improvement), "stopped_early": bool(stopped_early),
            "reason": f"stopped early at {end:,.0f} notes: {reason}" if stopped_early else reason}
