"""The GPU path, end to end, on a CUDA machine: ``make gpu-check``.

Runs, each as its own command (what a user would type), and records its exit status, wall time
and headline figures in ``<out>/report.json`` and ``<out>/report.md``:

1. ``musicgen.bench device=cuda``: training and generation against HF Llama, our decoder under
   ``torch.compile`` with CUDA graphs (``bench.yaml``'s ``compile_with.cuda``);
2. ``musicgen.train +version=v8`` at its defaults (bf16-mixed where the GPU has it) with the
   training forward compiled, for ``--steps`` optimizer steps;
3. ``musicgen.generate`` from that run (KV cache; 8 samples);
4. a 1-process ``trainer=ddp`` run of the same (NCCL), for ``--ddp-steps`` steps.

A step that fails is reported and the others still run; the exit status is 1 if any failed.
Without a CUDA device it stops at once with one line.

    python scripts/gpu_check.py [--out outputs/gpu_check] [--steps 300] [--ddp-steps 50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def run(name: str, args: list[str], log_dir: Path) -> dict:
    """``python -m <args>``, its output in ``<log_dir>/<name>.log``."""
    t0 = time.perf_counter()
    with open(log_dir / f"{name}.log", "w") as log:
        rc = subprocess.run([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    print(f"{name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {seconds:.0f} s; log {log_dir / name}.log")
    return {"command": "python -m " + " ".join(args), "rc": rc, "seconds": round(seconds, 1)}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/gpu_check")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--ddp-steps", type=int, default=50)
    a = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("error: make gpu-check needs a CUDA device; torch sees none "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda})", file=sys.stderr)
        return 1
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = {"name": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "bf16": torch.cuda.is_bf16_supported()}
    train = ["+version=v8", "objective.module.compile=true", f"trainer.max_steps={a.steps}", "trainer.max_time=null",
             "trainer.val_check_interval=100", "trainer.check_val_every_n_epoch=null", "logger=csv"]
    steps = {
        "bench": run("bench", ["musicgen", "bench", "device=cuda", f"out_dir={out / 'bench'}"], out),
        "train_v8": run("train_v8", ["musicgen.train", *train, f"hydra.run.dir={out / 'v8'}"], out),
        "generate": run("generate", ["musicgen.generate", f"ckpt_path={out / 'v8'}", "num_samples=8", "device=cuda",
                                     f"output_dir={out / 'v8' / 'samples'}"], out),
        "ddp_1_process": run("ddp_1_process", ["musicgen.train", *train[:2], f"trainer.max_steps={a.ddp_steps}",
                                               "trainer.max_time=null", "trainer=ddp", "trainer.devices=1",
                                               "logger=csv", f"hydra.run.dir={out / 'ddp'}"], out),
    }
    metrics = read_json(out / "v8" / "metrics.json")
    generation = read_json(out / "v8" / "samples" / "generation.json")
    figures = {
        "train_v8": {k: metrics.get(k) for k in ("global_step", "val_ppl", "n_params")},
        "generate": generation.get("timing", {}),
        "ddp_1_process": {k: read_json(out / "ddp" / "metrics.json").get(k) for k in ("global_step", "val_ppl")},
    }
    report = {"device": device, "steps": steps, "figures": figures, "bench": str(out / "bench" / "PERFORMANCE.md")}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# GPU check: {device['name']} (torch {device['torch']}, CUDA {device['cuda']}, bf16 {device['bf16']})",
             "", "| step | result | seconds | figures | command |", "|---|---|---|---|---|"]
    for name, s in steps.items():
        shown = ", ".join(f"{k} {v}" for k, v in figures.get(name, {}).items() if v is not None)
        lines.append(f"| {name} | {'ok' if s['rc'] == 0 else 'FAILED'} | {s['seconds']} | {shown} | `{s['command']}` |")
    lines += ["", f"The bench's own report: `{report['bench']}`.", ""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if all(s["rc"] == 0 for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
