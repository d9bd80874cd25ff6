"""The leaderboard: ``musicgen leaderboard`` (``make leaderboard``; config ``conf/leaderboard.yaml``).

Every entry (a version, or a version with one setting changed: the ablations behind the original
design's claims) trains on one common dataset and split, for the same wall-clock budget, once per
seed, through one Hydra multirun per entry (``launcher=[hydra/launcher=slurm]`` sends the runs to
a cluster unchanged). Every run is evaluated on the test split by ``musicgen.evaluate`` (in this process). The board
pools each entry's seeds (NLL: the per-piece NLL averaged over seeds; sample figures: the seeds'
samples together) and gives every figure its 95% bootstrap interval over pieces. It writes
``leaderboard.json``, ``leaderboard.md``, ``metrics.png`` and ``curves.png`` into ``output_dir``;
``publish=true`` also writes the board and its figures into the docs site (``docs/results/leaderboard.md``).

Finished runs (``metrics.json``) and evaluations (``evaluation.json`` with the board's settings)
are reused; an unfinished run starts over. So an interrupted board resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from musicgen.errors import ConfigError, UserError
from musicgen.evaluation.run import evaluate
from musicgen.fs import atomic_write_text
from musicgen.metrics.likelihood import likelihood_metrics
from musicgen.metrics.report import fmt, separable
from musicgen.metrics.samples import Reference, sample_figures
from musicgen.plots import save_figure
from musicgen.publish import publish, results_dir
from musicgen.runtime import hydra_main

log = logging.getLogger(__name__)

#: Sample figures in the board, beside the likelihood.
SAMPLE_COLUMNS = ("pitch_class_overlap", "interval_overlap", "duration_overlap", "ioi_overlap",
                  "ngram_repetition_4", "copied_8gram_share", "syntax_error_rate")
FAMILIES = {"pitch strings (V1-V5)": ("pitch strings",), "REMI and REMI+BPE (V6-V8)": ("REMI", "REMI+BPE")}
#: The original design's claims: (hypothesis, entry, against, figure, "lower" or "higher" is better).
CLAIMS = (
    ("Tokenisation mattered more than capacity: V5 -> V6 (REMI, embedding) moves the melodic-interval "
     "overlap more than V1 -> V5 (a wider LSTM)", "v6", "v5", "interval_overlap", "higher"),
    ("... and V1 -> V5 (capacity) alone", "v5", "v1", "interval_overlap", "higher"),
    ("The Transformer beats the LSTM: V7 against V6", "v7", "v6", "nll_per_note", "lower"),
    ("BPE-1024 beats BPE-512: V8 against V7 on the same data", "v8", "v7", "nll_per_note", "lower"),
    ("Augmentation was necessary: V7 against V7 without transposed copies", "v7", "v7_no_augment",
     "nll_per_note", "lower"),
    ("BPE widens the context at negligible cost: V7 (BPE-512) against V7 on plain REMI, same window",
     "v7", "v7_remi", "nll_per_note", "lower"),
)


def entry_names(cfg: DictConfig) -> list[str]:
    names = list(cfg.entries) if cfg.only is None else list(cfg.only)
    unknown = [n for n in names if n not in cfg.entries]
    if unknown:
        raise ConfigError(f"only={names}: {unknown} are not entries; choose from {list(cfg.entries)}")
    if cfg.seeds < 1:
        raise ConfigError(f"seeds={cfg.seeds} must be >= 1")
    return names


def run_dir(cfg: DictConfig, name: str, seed: int) -> Path:
    return Path(cfg.output_dir) / "runs" / f"{name}_s{seed}"


def run_settings(cfg: DictConfig, name: str, seed: int) -> list[str]:
    """The training overrides of one run (what decides whether a finished run can be reused)."""
    return [*cfg.entries[name], f"seed={seed}", f"trainer.max_time={cfg.budget}", *cfg.common]


def _reusable(cfg: DictConfig, name: str, seed: int) -> bool:
    d = run_dir(cfg, name, seed)
    marker = d.with_name(d.name + ".board.json")  # beside the run: written before it starts
    return (d / "metrics.json").is_file() and marker.is_file() and \
        json.loads(marker.read_text()) == run_settings(cfg, name, seed)


def train_entries(cfg: DictConfig, names: list[str]) -> None:
    """One multirun per entry over the seeds it still lacks (or trained with other settings)."""
    for name in names:
        missing = [s for s in range(cfg.seeds) if not _reusable(cfg, name, s)]
        if not missing:
            log.info("%s: %d finished runs reused", name, cfg.seeds)
            continue
        for s in missing:  # an unfinished run, or one of other settings, starts over
            d = run_dir(cfg, name, s)
            shutil.rmtree(d, ignore_errors=True)
            atomic_write_text(d.with_name(d.name + ".board.json"), json.dumps(run_settings(cfg, name, s)))
        cmd = [sys.executable, "-m", "musicgen.train", "-m", *cfg.entries[name],
               f"seed={','.join(map(str, missing))}", f"trainer.max_time={cfg.budget}", *cfg.common,
               *cfg.launcher, f"hydra.sweep.dir={Path(cfg.output_dir) / 'runs'}",
               f"hydra.sweep.subdir={name}_s${{seed}}"]
        log.info("%s: training seeds %s for %s each", name, missing, cfg.budget)
        if subprocess.run(cmd).returncode != 0:
            raise UserError(f"training {name} failed; see {run_dir(cfg, name, missing[0])}/train.log, "
                            "then run the same command again (finished runs are kept)")


def evaluate_entries(cfg: DictConfig, names: list[str]) -> None:
    """``musicgen.evaluate`` on the test split for every run without an evaluation of these settings."""
    wanted = {"split": "test", **OmegaConf.to_container(cfg.evaluate)}
    for name in names:
        for s in range(cfg.seeds):
            d = run_dir(cfg, name, s)
            marker = d / "board_evaluation.json"  # written once an evaluation with these settings is complete
            if marker.is_file() and json.loads(marker.read_text()) == wanted:
                continue
            log.info("%s seed %d: evaluating", name, s)
            try:
                evaluate(hydra.compose("evaluate", [f"ckpt_path={d}", *(f"{k}={v}" for k, v in wanted.items())]))
            except UserError as e:
                raise UserError(f"evaluating {d} failed: {e}") from e
            atomic_write_text(marker, json.dumps(wanted))


# ----------------------------------------------------------------------------- pooling


def tokenizer_label(evaluation: dict[str, Any], vocab_size: int) -> str:
    if evaluation["tokenizer"] == "PitchTokenizer":
        return "pitch strings"
    return "REMI" if vocab_size == 362 else f"REMI+BPE-{vocab_size}"


def _family(label: str) -> str:
    return next(f for f, prefixes in FAMILIES.items() if label.split("-")[0] in prefixes)


def _load(d: Path) -> dict[str, Any]:
    with np.load(d / "evaluation_pieces.npz") as z:
        pieces = {k: z[k] for k in z.files}
    return {"metrics": json.loads((d / "metrics.json").read_text()),
            "evaluation": json.loads((d / "evaluation.json").read_text()), "pieces": pieces,
            "config": OmegaConf.to_container(OmegaConf.load(d / "config.yaml"))}


def _rows(pieces: dict[str, np.ndarray], row: str) -> dict[str, np.ndarray]:
    return {k.split("/", 1)[1]: v for k, v in pieces.items() if k.startswith(f"{row}/")}


def pool(runs: list[dict[str, Any]], row: str, n_boot: int) -> dict[str, Any]:
    """One row of the board from its seeds' runs: likelihood of the per-piece NLL averaged over
    the seeds (``row`` "model" or "ngram"; none for "real"), and the sample figures of all the
    seeds' pieces together, each with its interval over pieces."""
    ev = runs[0]["evaluation"]
    ref = Reference({h: np.asarray(v) for h, v in ev["histograms"]["reference"].items()},
                    tuple(ev["settings"]["reference_pitch_range"]), {}, ev["settings"]["reference_pieces"])
    blocks = [_rows(r["pieces"], row) for r in runs]
    stats = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    out = sample_figures(stats, ref, n_boot)
    out["sampled_pieces"] = int(len(stats["notes"]))
    if row != "real":
        lk = runs[0]["pieces"]
        nll = np.mean([r["pieces"][f"likelihood/{row}_nll"] for r in runs], axis=0)
        out.update(likelihood_metrics(nll, lk["likelihood/tokens"], lk["likelihood/notes"], n_boot))
        out["seeds_nll_per_note"] = [r["evaluation"][row]["nll_per_note"]["value"] for r in runs]
    return out


def aggregate(cfg: DictConfig, names: list[str]) -> dict[str, Any]:
    """The board: one row per entry, one n-gram row per tokeniser, one real-pieces row per family."""
    entries, ngrams, reals = {}, {}, {}
    for name in names:
        runs = [_load(run_dir(cfg, name, s)) for s in range(cfg.seeds)]
        m, ev, c = runs[0]["metrics"], runs[0]["evaluation"], runs[0]["config"]
        label = tokenizer_label(ev, m["vocab_size"])
        row = pool(runs, "model", cfg.evaluate.bootstrap)
        row.update(
            entry=name, version=c["version"]["name"], model=c["model"]["_target_"].rsplit(".", 1)[1],
            objective=c["objective"]["name"], tokenizer=label, family=_family(label), parameters=m["n_params"],
            steps=float(np.mean([r["metrics"]["global_step"] for r in runs])),
            train_target_tokens=float(np.mean([r["metrics"].get("train_target_tokens", 0) for r in runs])),
            generation_tokens_per_second=float(np.mean(
                [r["evaluation"]["model"]["generation_tokens_per_second"] for r in runs])),
            seeds=len(runs), overrides=list(cfg.entries[name]),
        )
        entries[name] = row
        if label not in ngrams and not any("augment" in o for o in cfg.entries[name]):  # the board's own data
            order = ev["settings"]["ngram_order"]
            ngrams[label] = {**pool(runs[:1], "ngram", cfg.evaluate.bootstrap), "entry": f"{order}-gram ({label})",
                             "tokenizer": label, "family": _family(label)}
        if row["family"] not in reals:
            reals[row["family"]] = {**pool(runs[:1], "real", cfg.evaluate.bootstrap),
                                    "entry": f"real test pieces (decoded by {label})", "family": row["family"]}
    return {"settings": {"budget": cfg.budget, "seeds": cfg.seeds, "common": list(cfg.common),
                         "evaluate": OmegaConf.to_container(cfg.evaluate)},
            "entries": entries, "ngram": ngrams, "real": reals, "claims": claims(entries)}


def claims(entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claim's verdict: supported / contradicted where the intervals separate, else not separable."""
    out = []
    for text, a, b, key, better in CLAIMS:
        if a not in entries or b not in entries:
            continue
        fa, fb = entries[a][key], entries[b][key]
        a_better = fa["value"] < fb["value"] if better == "lower" else fa["value"] > fb["value"]
        verdict = "not separable" if not separable(fa, fb) else ("supported" if a_better else "contradicted")
        out.append({"claim": text, "entry": a, "against": b, "figure": key, "entry_value": fa, "against_value": fb,
                    "verdict": verdict})
    return out


# ----------------------------------------------------------------------------- the report


def _int(x: float) -> str:
    return f"{x:,.0f}"


def board_markdown(board: dict[str, Any]) -> str:
    s = board["settings"]
    keys = ("nll_per_note", "perplexity", *SAMPLE_COLUMNS)
    head = ("| entry | model | tokeniser | parameters | steps | training tokens | " + " | ".join(keys)
            + " | generation tokens/s |")
    lines = [
        "# Leaderboard",
        "",
        f"Every entry trained for {s['budget']} (wall clock) per seed, {s['seeds']} seeds, on one dataset and "
        f"split (`{' '.join(s['common'])}`), and evaluated on the test split (`musicgen.evaluate`, "
        f"{s['evaluate']['num_samples']} samples per seed). NLL per note: the per-piece NLL averaged over the "
        "seeds; sample figures: all seeds' samples together; every figure with its 95% bootstrap interval "
        "over pieces. NLL per note compares rows within a family only.",
        "",
    ]
    for family in FAMILIES:
        rows = [e for e in board["entries"].values() if e["family"] == family]
        if not rows:
            continue
        lines += [f"## {family}", "", head, "|---" * (len(keys) + 7) + "|"]
        for e in rows:
            lines.append(f"| {e['entry']} | {e['model']} ({e['objective']}) | {e['tokenizer']} "
                         f"| {_int(e['parameters'])} | {_int(e['steps'])} | {_int(e['train_target_tokens'])} | "
                         + " | ".join(fmt(e.get(k)) for k in keys) + f" | {e['generation_tokens_per_second']:.0f} |")
        for ref in [*(n for n in board["ngram"].values() if n["family"] == family), board["real"].get(family)]:
            if ref:
                lines.append(f"| {ref['entry']} | - | - | - | - | - | " + " | ".join(fmt(ref.get(k)) for k in keys)
                             + " | - |")
        lines.append("")
    if board["claims"]:
        lines += ["## The original design's claims", "", "| claim | figure | entry | against | verdict |",
                  "|---|---|---|---|---|"]
        for c in board["claims"]:
            lines.append(f"| {c['claim']} | {c['figure']} | {c['entry']} {fmt(c['entry_value'])} | "
                         f"{c['against']} {fmt(c['against_value'])} | {c['verdict']} |")
        lines.append("")
    lines += ["![metrics](metrics.png)", "", "![validation curves](curves.png)", ""]
    return "\n".join(lines)


def plot_board(board: dict[str, Any], out_dir: Path, cfg: DictConfig) -> None:
    entries = list(board["entries"].values())
    keys = ("nll_per_note", *SAMPLE_COLUMNS)
    fig = Figure(figsize=(14, 8), dpi=100)
    FigureCanvasAgg(fig)
    colors = {f: c for f, c in zip(FAMILIES, ("tab:orange", "tab:blue"))}
    for k, key in enumerate(keys):
        ax = fig.add_subplot(2, 4, k + 1)
        for j, e in enumerate(entries):
            f = e[key]
            err = None if np.isnan(f["low"]) else [[max(0, f["value"] - f["low"])], [max(0, f["high"] - f["value"])]]
            ax.bar(j, f["value"], yerr=err, color=colors[e["family"]], capsize=3)
        ax.set_xticks(range(len(entries)), [e["entry"] for e in entries], rotation=60, fontsize=7)
        ax.set_title(key, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out_dir / "metrics.png")

    fig = Figure(figsize=(12, 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = {f: fig.add_subplot(1, len(FAMILIES), i + 1) for i, f in enumerate(FAMILIES)}
    for e in entries:
        for s in range(cfg.seeds):
            t, loss = validation_curve(run_dir(cfg, e["entry"], s))
            axes[e["family"]].plot(t, loss, marker=".", label=e["entry"] if s == 0 else None,
                                   color=f"C{list(board['entries']).index(e['entry']) % 10}", alpha=0.8)
    for family, ax in axes.items():
        ax.set_title(family, fontsize=9)
        ax.set_xlabel("training seconds")
        ax.set_ylabel("val/loss (nats per token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_dir / "curves.png")


def validation_curve(d: Path) -> tuple[list[float], list[float]]:
    """(training seconds, val/loss) of each validation of a run, from its CSV log."""
    t, loss = [], []
    for path in sorted(d.rglob("metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get("val/loss") and row.get("time/train_seconds"):
                t.append(float(row["time/train_seconds"]))
                loss.append(float(row["val/loss"]))
    return t, loss


def leaderboard(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    names = entry_names(cfg)
    if cfg.publish:
        results_dir(cfg.publish_dir)  # a missing docs directory fails before the training
    train_entries(cfg, names)
    evaluate_entries(cfg, names)
    board = aggregate(cfg, names)
    atomic_write_text(out / "leaderboard.json", json.dumps(board, indent=1))
    plot_board(board, out, cfg)
    atomic_write_text(out / "leaderboard.md", board_markdown(board))
    log.info("leaderboard written to %s", out / "leaderboard.md")
    if cfg.publish:
        page = publish("leaderboard", board_markdown(board), [out / "metrics.png", out / "curves.png"],
                       docs_dir=cfg.publish_dir)
        log.info("published to %s", page)
    return board


@hydra_main("leaderboard")
def main(cfg: DictConfig) -> None:
    board = leaderboard(cfg)
    print(board_markdown(board))


if __name__ == "__main__":
    main()
