"""``musicgen evaluate ckpt_path=<run dir or .ckpt>``: the evaluation report of a run (``musicgen.evaluation``)."""

from __future__ import annotations

from omegaconf import DictConfig

from musicgen.evaluation.run import evaluate
from musicgen.metrics.report import report_markdown
from musicgen.runtime import hydra_main


@hydra_main("evaluate")
def main(cfg: DictConfig) -> None:
    result = evaluate(cfg)
    print(report_markdown(result))
    print(f"report: {result['output_dir']}/evaluation.md")


if __name__ == "__main__":
    main()
