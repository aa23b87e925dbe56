"""Command line: `longlive <command> --config_path CONFIG [key=value ...]`.

    longlive video-conditional --config_path configs/tiny_video_conditional.yaml
    longlive t2v --config_path configs/longlive_inference.yaml num_output_frames=120

Dotted `key=value` arguments override the config. A user's mistake (a bad key, a missing file) ends
the command with one line on stderr and exit code 2; failed samples give exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from longlive.config import ConfigError, load_config
from longlive.jobs import JobReport, rank, run_text_to_video_job, run_video_conditional_job
from longlive.pipeline import VideoConditionalPipeline

JOBS: dict[str, Callable] = {
    "video-conditional": run_video_conditional_job,
    "t2v": run_text_to_video_job,
}


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"[rank{rank()}] %(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="longlive", description="Block-causal video generation.")
    parser.add_argument("command", choices=sorted(JOBS))
    parser.add_argument("--config_path", required=True, help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. num_output_frames=120")
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    log = logging.getLogger("longlive")
    try:
        cfg = load_config(args.config_path, args.overrides)
        pipeline = VideoConditionalPipeline.from_config(cfg)
        report: JobReport = JOBS[args.command](cfg, pipeline)
    except (ConfigError, FileNotFoundError) as err:
        print(f"longlive: error: {err}", file=sys.stderr)
        return 2
    log.info("%d videos written to %s", len(report.written), cfg.output_folder)
    if report.failed:
        log.error("%d samples failed:\n  %s", len(report.failed), "\n  ".join(report.failed))
        return 1
    return 0


def job_entry(command: str) -> int:
    """Entry for the root scripts: `python video_conditional_inference.py --config_path ...`."""
    return main([command, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
