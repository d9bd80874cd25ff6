"""Wall time of work resumed over several sittings: an experiment that keeps its finished work on
disk (the benchmark's store, the leaderboard's runs) notes when each invocation starts
(``begin``), and ``wall_time`` sums, per invocation, the time from its start to the last file it
wrote, so that a run resumed over several sessions is timed as one, and what an interrupt threw
away is not counted (an uninterrupted run would not have done it)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: One line per invocation on a folder of finished work: when it started, and what ``begin`` was told.
INVOCATIONS = "invocations.jsonl"


def begin(root: Path, **about: Any) -> None:
    """Note that an invocation on ``root`` starts now; ``about`` is kept beside the time (the commit, say)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / INVOCATIONS, "a") as f:
        f.write(json.dumps({"start": time.time(), **about}) + "\n")


def wall_time(root: Path, now: float | None = None) -> dict[str, Any]:
    """The wall time the work under ``root`` took, summed over the invocations that wrote it: each
    counts from its start to the last file it wrote, the last one to ``now`` (its report). Files
    written before the first timed invocation are counted apart, untimed."""
    root, now = Path(root), time.time() if now is None else now
    path = root / INVOCATIONS
    starts = [json.loads(line)["start"] for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []
    written = sorted(p.stat().st_mtime for p in root.rglob("*") if p.name != INVOCATIONS and p.is_file())
    seconds, per = 0.0, []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else None
        mine = [t for t in written if t >= start and (end is None or t < end)]
        took = (now - start) if end is None else ((mine[-1] - start) if mine else 0.0)
        per.append({"start": start, "seconds": took, "pieces": len(mine)})
        seconds += took
    untimed = sum(t < starts[0] for t in written) if starts else len(written)
    return {"seconds": seconds, "invocations": per, "untimed_pieces": untimed}


def wall_time_line(w: dict[str, Any], what: str = "report") -> str:
    """``wall_time``'s figure in a sentence (with ``cores`` added to it), for a result page."""
    h, m = divmod(round(w["seconds"] / 60), 60)
    n = len(w["invocations"])
    line = (f"Wall time: **{h} h {m:02d} min** on {w['cores']} cores, over {n} invocation{'s' if n != 1 else ''} "
            f"of the command (each counted from its start to the last piece of work it stored; the last to this "
            f"{what}), so a resumed run is timed as one.")
    if w["untimed_pieces"]:
        k = w["untimed_pieces"]
        line += (f" {k} {'piece' if k == 1 else 'pieces'} of work stored before timing began "
                 "(reused, untimed) are not in this figure.")
    return line
