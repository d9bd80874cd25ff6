"""``musicgen <verb> [hydra overrides]``: one command line, each verb the same Hydra app as its
``python -m`` form (``musicgen train +version=v8`` is ``python -m musicgen.train +version=v8``)."""

from __future__ import annotations

import importlib
import sys

#: verb -> (the module whose ``main()`` runs it, what it does)
VERBS = {
    "train": ("musicgen.cli.train", "train a version: musicgen train +version=v7 preset=cpu"),
    "generate": ("musicgen.cli.generate", "sample MIDI from a run: musicgen generate ckpt_path=<run>"),
    "evaluate": ("musicgen.cli.evaluate", "evaluation report of a run: musicgen evaluate ckpt_path=<run>"),
    "prepare": ("musicgen.cli.prepare", "export the embedded corpora to MIDI under data/"),
    "export": ("musicgen.cli.export", "a V7/V8 run as a Hugging Face model directory"),
    "app": ("musicgen.apps.studio", "local web page to generate from a run"),
    "gallery": ("musicgen.apps.gallery", "static page of runs side by side"),
    "leaderboard": ("musicgen.experiments.leaderboard", "train and evaluate V1..V8 on one dataset"),
    "benchmark": ("musicgen.experiments.pearce2005", "the published benchmark: musicgen benchmark pearce2005"),
    "bench": ("musicgen.experiments.speed.__main__", "speed against HF Llama of the same shape"),
    "ttq": ("musicgen.experiments.speed.ttq", "time to quality against MidiTok + HF Trainer"),
    "ttq-ablation": ("musicgen.experiments.speed.ablation", "recipe candidates raced against the default recipe"),
    "scale": ("musicgen.experiments.speed.scale", "data pipeline cost at 1x, 4x, 16x the corpus"),
    "control": ("musicgen.experiments.control", "attribute adherence of a conditioned run"),
    "infilling": ("musicgen.experiments.infilling", "infilling NLL of an infilling run"),
    "seeds": ("musicgen.experiments.seeds", "one setup over training seeds, figures with seed intervals"),
    "listen": ("musicgen.apps.listen", "blind listening test of a study: musicgen listen study=smoke"),
    "ratings": ("musicgen.experiments.ratings", "rank a listening study's contestants: musicgen ratings study=smoke"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    verbs = "\n".join(f"  {v:{width}s}  {what}" for v, (_, what) in VERBS.items())
    return f"usage: musicgen <verb> [overrides ...]\n\nverbs:\n{verbs}\n\n`musicgen <verb> --help`: its config"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        raise SystemExit(f"error: unknown verb {verb!r}; one of: {', '.join(VERBS)}")
    sys.argv = [f"musicgen {verb}", *rest]
    importlib.import_module(VERBS[verb][0]).main()


if __name__ == "__main__":
    main()
