"""Time one gradient clip + AdamW step, fused against foreach, on the cpu-preset V7 and the V8 shape
(random gradients; median and interquartile range of 12 repetitions, the two alternating):

    python scripts/optimizer_step.py
"""

import statistics
import time

import torch

from musicgen.models import MusicTransformer
from musicgen.training.optim import build_optimizer

SHAPES = {
    "cpu-preset V7 (4L/256d)": dict(n_layers=4, n_heads=4, d_model=256, d_ff=768),
    "V8 (8L/512d)": dict(n_layers=8, n_heads=8, d_model=512, d_ff=2048),
}


def quartiles_ms(xs: list[float]) -> tuple[float, float]:
    s = sorted(xs)
    return round(s[len(s) // 4] * 1e3, 1), round(s[3 * len(s) // 4] * 1e3, 1)


def main() -> None:
    torch.manual_seed(0)
    for name, shape in SHAPES.items():
        net = MusicTransformer(vocab_size=1024, max_seq_len=512, **shape)
        for p in net.parameters():
            p.grad = torch.randn_like(p)
        optimizers = {f: build_optimizer(net, 1000, 1e-3, 0.1, (0.9, 0.95), 10, 0.1, fused=f)[0] for f in (True, False)}
        times: dict[bool, list[float]] = {True: [], False: []}
        for rep in range(15):
            for fused, opt in optimizers.items():
                t = time.perf_counter()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                if rep >= 3:  # the first steps allocate the optimizer state
                    times[fused].append(time.perf_counter() - t)
        fused, foreach = statistics.median(times[True]), statistics.median(times[False])
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"{name}: {params:.1f}M params; clip + step: fused {fused * 1e3:.1f} ms "
              f"(IQR {quartiles_ms(times[True])}), foreach {foreach * 1e3:.1f} ms "
              f"(IQR {quartiles_ms(times[False])}); foreach / fused {foreach / fused:.2f}x")


if __name__ == "__main__":
    main()
