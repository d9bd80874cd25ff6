"""One setup over several training seeds: ``musicgen seeds`` (``make demo-seeds``).

Trains ``train.overrides`` once per seed into ``<dir>/seed_<s>`` (``train_seeds``: a finished run is
reused, an interrupted one resumes), evaluates each run on its test split (``musicgen evaluate``
with ``evaluate`` overrides; an evaluation made with the same overrides is reused), and writes
``<dir>/seeds.json`` and ``<dir>/seeds.md``: every figure of the model row per seed, and its mean
over seeds with a 95% interval that covers what another training seed would give
(``musicgen.metrics.statistics``):

- NLL per note, and the model minus the n-gram, over seeds and pieces at once
  (``seed_piece_interval``: every seed is scored on the same test pieces, so the difference is
  paired piece by piece; the seeds' spread and the pieces' spread both enter the interval);
- every sample figure: the t interval over the seeds' values (each seed draws its own samples, so
  the spread over seeds holds both the training seed's and the samples' variation).

The n-gram and real rows do not depend on the training seed (the same training pieces, the same
sampling seed): they are shown once, from the first seed. ``publish=true`` writes the page into
the docs site (``musicgen.publish``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from musicgen.errors import ConfigError, UserError
from musicgen.fs import atomic_write_text
from musicgen.metrics.report import COPY_INTERVAL_KEYS, LENGTH_KEYS, SAMPLE_KEYS, TONAL_KEYS, fmt
from musicgen.metrics.statistics import seed_piece_interval, t_over_seeds, welch_difference
from musicgen.publish import publish
from musicgen.runtime import hydra_main

log = logging.getLogger(__name__)

#: The model row's figures the page shows, beside NLL per note.
FIGURES = TONAL_KEYS + SAMPLE_KEYS + LENGTH_KEYS + COPY_INTERVAL_KEYS[:3]


def train_seeds(overrides: Sequence[str], seeds: Sequence[int], runs_dir: str | Path) -> list[Path]:
    """The runs ``musicgen train <overrides> seed=<s>`` in ``<runs_dir>/seed_<s>``, one per seed,
    all on one data split (``data.seed=0`` unless ``overrides`` set it: ``data.seed`` follows
    ``seed`` by default, and seeds compared piece by piece must be scored on the same pieces),
    trained in turn where missing (``{seed}`` in an override is replaced by the seed, so each seed can
    start from its own run, e.g. ``objective.module.init_from=outputs/demo_seeds/seed_{seed}``): a run
    with ``metrics.json`` is finished and reused, one with a
    ``last.ckpt`` only continues (``resume=true``), any other starts. Run again after a failure:
    nothing finished is redone. The run directories, in seed order."""
    dirs = []
    split = [] if any(o.lstrip("+").startswith("data.seed=") for o in overrides) else ["data.seed=0"]
    for s in seeds:
        d = Path(runs_dir) / f"seed_{s}"
        dirs.append(d)
        if (d / "metrics.json").is_file():
            log.info("seed %s: %s is finished, reused", s, d)
            continue
        resume = ["resume=true"] if (d / "checkpoints" / "last.ckpt").is_file() else []
        own = [o.replace("{seed}", str(s)) for o in overrides]  # e.g. init_from=<runs>/seed_{seed}
        cmd = [sys.executable, "-m", "musicgen.train", *own, *split, f"seed={s}", *resume, f"hydra.run.dir={d}"]
        log.info("seed %s: %s", s, " ".join(cmd[1:]))
        if subprocess.run(cmd).returncode != 0:
            raise UserError(f"training seed {s} failed; see {d}/train.log, then run the same command again "
                            "(finished seeds are kept, an interrupted one continues)")
    return dirs


def evaluate_seeds(dirs: Sequence[Path], overrides: Sequence[str]) -> None:
    """``musicgen evaluate ckpt_path=<d> <overrides>`` for each run directory, skipped where the
    run's ``evaluation.json`` was written with the same overrides (``seeds_evaluate.json``)."""
    for d in dirs:
        marker = d / "seeds_evaluate.json"
        if (d / "evaluation.json").is_file() and marker.is_file() and json.loads(marker.read_text()) == list(overrides):
            log.info("%s: evaluated with the same settings, reused", d)
            continue
        cmd = [sys.executable, "-m", "musicgen.evaluate", f"ckpt_path={d}", *overrides]
        log.info("evaluating %s: %s", d, " ".join(cmd[1:]))
        if subprocess.run(cmd).returncode != 0:  # its own process, as training: one Hydra app per process
            raise UserError(f"evaluating {d} failed; fix the cause, then run the same command again")
        atomic_write_text(marker, json.dumps(list(overrides)))


def _model_nll(dirs: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Each run's per-piece model NLL (seeds, pieces) and the pieces' note counts."""
    nll, notes = [], None
    for d in dirs:
        with np.load(d / "evaluation_pieces.npz") as z:
            nll.append(z["likelihood/model_nll"])
            if notes is None:
                notes = z["likelihood/notes"]
            elif not np.array_equal(z["likelihood/notes"], notes):
                raise ConfigError(f"{d} was scored on other test pieces than {dirs[0]}: the seeds must share "
                                  "the data split (vary seed=, not data.seed=)")
    return np.stack(nll), notes


def seed_lengths(evals: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Each evaluation's length figures that are not the model's: the training documents' tokens per
    note (originals, transposed copies) and the mean notes per piece of the real row, whose pieces
    each evaluation draws (so they can differ between runs and between setups)."""
    out: dict[str, list[float]] = {}
    for e in evals:
        lengths = e.get("lengths", {})
        row = {f"training tokens per note, {k}": v for k, v in lengths.get("training_tokens_per_note", {}).items()}
        if "notes_per_piece" in e.get("real", {}):
            row["real row's notes per piece"] = e["real"]["notes_per_piece"]["value"]
        for k, v in row.items():
            out.setdefault(k, []).append(float(v))
    return {k: v for k, v in out.items() if len(v) == len(evals)}


def pool_seeds(dirs: Sequence[Path]) -> dict[str, Any]:
    """The seeds' evaluations (``evaluation.json`` and ``evaluation_pieces.npz`` of each run) pooled."""
    evals = [json.loads((d / "evaluation.json").read_text()) for d in dirs]
    nll_arr, notes = _model_nll(dirs)  # the same pieces for every seed (data.seed), checked
    with np.load(dirs[0] / "evaluation_pieces.npz") as z:
        ngram_nll = z["likelihood/ngram_nll"]
    model = {"nll_per_note": seed_piece_interval(nll_arr, notes),
             "model_minus_ngram_nll_per_note": seed_piece_interval(nll_arr - ngram_nll[None, :], notes)}
    per_seed = {"nll_per_note": [e["model"]["nll_per_note"]["value"] for e in evals]}
    for key in FIGURES:
        vals = [e["model"][key]["value"] for e in evals if key in e["model"]]
        if len(vals) == len(evals):
            per_seed[key] = vals
            model[key] = t_over_seeds(vals)
    if all("critic" in e for e in evals):  # the critic's AUC, model against real (0.5: indistinguishable)
        per_seed["critic_auc"] = [e["critic"]["model"]["value"] for e in evals]
        model["critic_auc"] = t_over_seeds(per_seed["critic_auc"])
    steps = [json.loads((d / "metrics.json").read_text()).get("global_step") for d in dirs]
    seeds = [OmegaConf.load(d / "config.yaml").seed for d in dirs]  # the training seed each run was given
    first = evals[0]
    return {"runs": [str(d) for d in dirs], "seeds": seeds, "steps": steps, "version": first["version"],
            "split": first["split"],
            "settings": first["settings"], "pieces": int(len(notes)), "notes": int(notes.sum()),
            "model": model, "per_seed": per_seed, "lengths": seed_lengths(evals),
            "ngram": first["ngram"], "real": first["real"],
            **({"critic": first["critic"]} if "critic" in first else {}),
            "interval": "95%: NLL over seeds and pieces (two-way t, seed_piece_interval); "
                        "sample figures: t over the seeds' values"}


def compare_seeds(result: dict[str, Any], baseline: dict[str, Any], paired: bool = False) -> dict[str, Any]:
    """This setup (``pool_seeds``' result) minus a baseline setup trained over seeds on the same data
    split: NLL per note paired piece by piece (``seed_piece_interval``: seed ``s`` of one beside seed
    ``s`` of the other, their difference a random draw of both setups' seeds), every sample figure by
    Welch's interval over the two setups' seed values (``welch_difference``). ``paired``: run ``s``
    of this setup was made from run ``s`` of the baseline (a fine-tuning of it), so the sample
    figures' per-seed differences take the t interval (``t_over_seeds``)."""
    nll, notes = _model_nll([Path(d) for d in result["runs"]])
    base_nll, base_notes = _model_nll([Path(d) for d in baseline["runs"]])
    if not np.array_equal(notes, base_notes):
        raise ConfigError(f"the baseline {baseline['runs'][0]} was scored on other test pieces than "
                          f"{result['runs'][0]}: compare setups trained on one data split (data.seed)")
    if len(nll) != len(base_nll):
        raise ConfigError(f"{len(nll)} seeds against the baseline's {len(base_nll)}: train as many of each")
    if paired and "seeds" in baseline and result["seeds"] != baseline["seeds"]:
        raise ConfigError(f"baseline_paired=true pairs run s with the baseline's run s, but the seeds differ: "
                          f"{result['seeds']} against {baseline['seeds']}")
    diff = {"nll_per_note": seed_piece_interval(nll - base_nll, notes)}
    for key, vals in result["per_seed"].items():
        if key != "nll_per_note" and key in baseline["per_seed"]:
            base = baseline["per_seed"][key]
            diff[key] = t_over_seeds(np.subtract(vals, base)) if paired else welch_difference(vals, base)
    how = ("t over the per-seed differences (run s made from the baseline's run s)" if paired
           else "Welch's t over the two setups' seed values")
    return {"baseline_runs": baseline["runs"], "baseline_model": baseline["model"], "difference": diff,
            "paired": paired, "interval": "95%: NLL paired piece by piece over seeds and pieces "
                                          f"(seed_piece_interval); sample figures: {how}"}


def compare_markdown(result: dict[str, Any]) -> str:
    c = result["comparison"]
    lines = ["", f"## Against the baseline `{Path(c['baseline_runs'][0]).parent}`", "",
             f"This setup minus the baseline ({len(c['baseline_runs'])} seeds, the same test pieces). "
             f"Intervals: {c['interval']}.", "",
             "| figure | this setup | baseline | difference [95% CI] |", "|---|---|---|---|"]
    for key, d in c["difference"].items():
        lines.append(f"| {key} | {fmt(result['model'][key])} | {fmt(c['baseline_model'][key])} | {fmt(d)} |")
    return "\n".join(lines) + "\n"


def seeds_markdown(result: dict[str, Any]) -> str:
    s, model, per_seed = result["settings"], result["model"], result["per_seed"]
    n_seeds = len(result["runs"])
    seed_heads = " | ".join(f"seed {i}" for i in result["seeds"])
    head = "| figure | model, mean over seeds | " + seed_heads + \
        f" | n-gram (order {s['ngram_order']}) | real {result['split']} pieces |"
    lines = [
        f"# {result.get('title') or result['version'] + f' over {n_seeds} training seeds'}",
        "",
        f"{n_seeds} runs of the same setup, differing only in the training seed (steps: "
        f"{', '.join(str(x) for x in result['steps'])}), each evaluated on the same {result['pieces']} "
        f"{result['split']} pieces ({result['notes']} notes) and with {s['num_samples']} samples per row. "
        f"Intervals: {result['interval']}. The n-gram and real rows do not depend on the training seed "
        "(`critic_auc`: the n-gram column is the n-gram against real pieces, the real column real against "
        "real, the floor).",
        "",
        f"- NLL per note: {fmt(model['nll_per_note'])} nats",
        f"- model minus n-gram, paired piece by piece: {fmt(model['model_minus_ngram_nll_per_note'])} nats per note",
        "",
        head,
        "|---|---|" + "---|" * (n_seeds + 2),
    ]
    for key, vals in per_seed.items():
        cells = " | ".join(f"{v:.3f}" for v in vals)
        ngram, real = result["ngram"].get(key), result["real"].get(key)
        if key == "critic_auc":  # n-gram against real, and real against real (the floor)
            ngram, real = result["critic"]["ngram"], result["critic"]["real_vs_real"]
        lines.append(f"| {key} | {fmt(model[key])} | {cells} | {fmt(ngram)} | {fmt(real)} |")
    if result.get("lengths"):
        lines += ["", "Lengths that are not the model's, per run (each run's `evaluation.json`):", "",
                  "| figure | " + seed_heads + " |",
                  "|---|" + "---|" * n_seeds]
        lines += [f"| {key} | " + " | ".join(f"{v:.3f}" for v in vals) + " |"
                  for key, vals in result["lengths"].items()]
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.train.seeds or not cfg.train.overrides:
        raise ConfigError("give train.seeds (e.g. [0,1,2]) and train.overrides (e.g. \"train.overrides="
                          "['+version=v7','preset=cpu']\")")
    out_dir = Path(cfg.dir)
    dirs = train_seeds(list(cfg.train.overrides), list(cfg.train.seeds), out_dir)
    evaluate_seeds(dirs, list(cfg.evaluate))
    result = pool_seeds(dirs)
    if cfg.title:
        result["title"] = str(cfg.title)
    md = seeds_markdown(result)
    if cfg.baseline:
        base = Path(cfg.baseline) / "seeds.json"
        if not base.is_file():
            raise ConfigError(f"baseline={cfg.baseline}: no seeds.json there (run musicgen seeds into it first)")
        result["comparison"] = compare_seeds(result, json.loads(base.read_text()), cfg.baseline_paired)
        md += compare_markdown(result)
    atomic_write_text(out_dir / "seeds.json", json.dumps(result, indent=1))
    atomic_write_text(out_dir / "seeds.md", md)
    if cfg.publish:
        result["published"] = str(publish(cfg.publish_name, md, [], docs_dir=cfg.publish_dir or None))
    return result


@hydra_main("seeds")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    log.info("\n%s", OmegaConf.to_yaml({"nll_per_note": result["model"]["nll_per_note"]}))
    print(f"written to {Path(cfg.dir) / 'seeds.md'}")


if __name__ == "__main__":
    main()
