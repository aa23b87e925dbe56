"""Command line: `longlive <command> ...`.

    longlive video-conditional --config_path configs/tiny_video_conditional.yaml [key=value ...]
    longlive i2v --config_path configs/tiny_i2v.yaml [key=value ...]
    longlive t2v --config_path configs/tiny_t2v.yaml [key=value ...]
    longlive interactive --config_path configs/tiny_interactive.yaml [key=value ...]
    longlive session --config_path configs/tiny_interactive.yaml --prompt "a red square" [--video V] [--max-frames N]
    longlive serve --config_path configs/demo_video_conditional.yaml [--host 127.0.0.1] [--port 7860]
    torchrun --nproc_per_node=N --no-python longlive video-conditional --config_path ...   # N ranks
    longlive check-weights wan_models/Wan2.1-T2V-1.3B/Wan2.1_VAE.pth longlive_models/models/lora.pt
    longlive compare videos/reference videos/compiled --out videos/compare
    longlive bench --config_path configs/longlive_video_conditional_inference.yaml generator_ckpt=null ...
    longlive bench --job t2v --config_path configs/longlive_video_conditional_inference.yaml data_path=...
    torchrun --nproc_per_node=2 --no-python longlive bench --config_path ... parallel.sequence=2  # one stream, 2 GPUs

Dotted `key=value` arguments override the config. A user's mistake (a bad key, a missing or wrong
weights file) ends the command with one line on stderr and exit code 2; failed samples give exit code 1
(on every rank, so torchrun reports the job failed).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from longlive import distributed, parallel
from longlive.compile_cache import enable_compile_cache
from longlive.config import ConfigError, load_config
from longlive.datasets import check_data_path
from longlive.jobs import (
    JobReport,
    prepare_output_folder,
    run_image_to_video_job,
    run_interactive_job,
    run_text_to_video_job,
    run_video_conditional_job,
)
from longlive.parallel import StreamGroup, follow_session, stream_group
from longlive.presets import PRESETS
from longlive.video_io import VideoReadError, VideoWriterMissing, require_video_writer
from longlive.weights import WeightsError

JOBS: dict[str, Callable] = {
    "video-conditional": run_video_conditional_job,
    "i2v": run_image_to_video_job,
    "t2v": run_text_to_video_job,
    "interactive": run_interactive_job,
}
# Keys a command sets whatever the config says: an image is a one-frame conditioning video.
FORCED_OVERRIDES: dict[str, tuple[str, ...]] = {"i2v": ("num_conditioning_frames=1",)}
# The command's bad input: one line, exit 2 (a sample's own bad input is `jobs.SAMPLE_ERRORS`: that sample fails).
USER_ERRORS = (ConfigError, WeightsError, FileNotFoundError, VideoReadError, VideoWriterMissing)


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"[rank{distributed.current().rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    """One parser per command (options and `key=value` overrides may be interleaved)."""
    parsers = {}
    for name in (*JOBS, "bench", "session", "serve"):
        parser = parsers[name] = argparse.ArgumentParser(prog=f"longlive {name}")
        parser.add_argument("--config_path", required=True, help="YAML config (see configs/)")
        parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. num_output_frames=120")
    parsers["bench"].add_argument("--profile", action="store_true", help="also print where the time goes")
    parsers["bench"].add_argument(
        "--job", choices=list(JOBS), help="time this job over data_path instead (reading, writing, encoding)"
    )
    session = parsers["session"]
    session.description = "Live session: type a prompt to switch at the next block; /pause /resume /save PATH /quit."
    session.add_argument("--prompt", help="first prompt (default: the first line typed)")
    session.add_argument("--video", help="condition on this video's first num_conditioning_frames frames")
    session.add_argument("--output", help="growing mp4 (default: output_folder/session.mp4)")
    session.add_argument("--preview", help="latest frame as a PNG (default: the output's name, .png)")
    session.add_argument(
        "--max-frames",
        type=int,
        help="end after this many latent frames, conditioning included (default: run until /quit or end of input)",
    )
    add_serve_options(parsers["serve"])
    check = parsers["check-weights"] = argparse.ArgumentParser(
        prog="longlive check-weights", description="Tell what weights files are and whether the engine loads them."
    )
    check.add_argument("paths", nargs="+")
    check.add_argument("--model_name", default="Wan2.1-T2V-1.3B", choices=sorted(PRESETS))
    check.add_argument("--use_ema", action="store_true", help="check the generator_ema entry of a LongLive .pt")
    compare = parsers["compare"] = argparse.ArgumentParser(
        prog="longlive compare", description="PSNR, cosine and L1 between two runs' videos, and side-by-side mp4s."
    )
    compare.add_argument("a", help="reference video, or folder of videos")
    compare.add_argument("b", help="video or folder to hold against it (paired by file name)")
    compare.add_argument("--out", default="videos/compare", help="folder for report.json and side-by-side mp4s")
    return parsers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parsers = build_parsers()
    if not argv or argv[0] not in parsers:
        top = argparse.ArgumentParser(prog="longlive", description="Block-causal video generation.")
        top.add_argument("command", choices=list(parsers))
        top.parse_args(argv[:1])  # prints usage and exits 2
    args = parsers[argv[0]].parse_intermixed_args(argv[1:])
    args.command = argv[0]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        if args.command == "check-weights":
            return check_weights(args.paths, args.model_name, args.use_ema)
        if args.command == "compare":
            return compare_runs(args.a, args.b, args.out)
        forced = FORCED_OVERRIDES.get(args.job if args.command == "bench" and args.job else args.command, ())
        if args.command == "bench" and args.job:
            forced = (*forced, "overwrite=true")  # every sample is generated, whatever a previous run left
        cfg = load_config(args.config_path, [*args.overrides, *forced])
        enable_compile_cache(cfg.compile_cache_dir)  # before anything compiles
        if args.command == "bench" and args.job:
            require_one_process(cfg, "longlive bench --job")
            return bench_job(cfg, args.job)
        if args.command == "bench":
            return bench(cfg, args.profile)
        if args.command == "session":
            return run_session(cfg, args)
        if args.command == "serve":
            require_one_process(cfg, "longlive serve")
            return run_serve(cfg, args)
        return run_job(args.command, cfg)
    except USER_ERRORS as err:
        print(f"longlive: error: {err}", file=sys.stderr)
        return 2


def require_one_process(cfg, command: str) -> None:
    """`command` runs one stream in one process: refuse torchrun and `parallel.sequence` rather than ignore them
    (the server would bind its port once per rank; `bench --job` builds no process group)."""
    if cfg.parallel.sequence > 1:
        raise ConfigError(
            f"{command} runs in one process: parallel.sequence={cfg.parallel.sequence} is for the jobs, "
            "longlive bench and longlive session under torchrun; set parallel.sequence=1"
        )
    world = distributed.detect()
    if world.world_size > 1:
        raise ConfigError(f"{command} runs in one process, not {world.world_size} ranks: run it without torchrun")


def run_job(command: str, cfg) -> int:
    """Build the pipeline on this rank's device, run its share of the job, report on rank 0."""
    from longlive.pipeline import resolve_device

    log = logging.getLogger("longlive")
    check_data_path(cfg.data_path)  # everything a job needs, before a model is built
    prepare_output_folder(cfg)
    require_video_writer()
    with distributed.launch(resolve_device(cfg.device)) as world:
        report = _run_job_on(command, cfg, world)  # its pipeline is gone before the group is (`launch`)
    if world.is_main:
        log.info(
            "%d videos written, %d samples skipped (already done), %d failed; results in %s",
            len(report.written),
            len(report.skipped),
            len(report.failed),
            report.results_path,
        )
        if report.failed:
            log.error("%d samples failed:\n  %s", len(report.failed), "\n  ".join(report.failed))
    return 1 if report.failed else 0


def _run_job_on(command: str, cfg, world: distributed.World) -> JobReport:
    from longlive.pipeline import VideoConditionalPipeline

    group = stream_group(world, cfg.parallel.sequence, cfg.parallel.vae_rank)
    pipeline = VideoConditionalPipeline.from_config(cfg, world.device, group=group)
    return JOBS[command](cfg, pipeline, world)


def compare_runs(a: str, b: str, out: str) -> int:
    import json

    from longlive.compare import compare

    print(json.dumps(compare(a, b, out)))
    return 0


def _one_stream_group(cfg, world: distributed.World, command: str) -> StreamGroup:
    """The ranks of a command that runs exactly one stream: all of them, `parallel.sequence` of them."""
    if world.world_size != cfg.parallel.sequence:
        raise ConfigError(
            f"{command} runs one stream: start it on parallel.sequence={cfg.parallel.sequence} ranks, "
            f"not {world.world_size}"
        )
    return stream_group(world, cfg.parallel.sequence, cfg.parallel.vae_rank)


def run_session(cfg, args: argparse.Namespace) -> int:
    """`longlive session`: one live rollout on this machine's device (or over `parallel.sequence` ranks under
    torchrun), steered from stdin."""
    from longlive.pipeline import resolve_device

    with distributed.launch(resolve_device(cfg.device)) as world:
        group = _one_stream_group(cfg, world, "a session")
        if not group.decodes:  # the decoding rank takes the commands and writes; this rank follows its prompts
            return _follow_session(cfg, args, world.device, group)
        return _lead_session(cfg, args, world.device, group)


def _follow_session(cfg, args: argparse.Namespace, device, group: StreamGroup) -> int:
    """A session's rollout on a rank that does not write it; the pipeline goes with this call (`launch`)."""
    from longlive.pipeline import VideoConditionalPipeline

    pipeline = VideoConditionalPipeline.from_config(cfg, device, group=group)
    follow_session(pipeline, _session_video(cfg, args), cfg.seed, args.max_frames)
    return 0


def _session_video(cfg, args: argparse.Namespace):
    from longlive.video_io import VideoReadError, load_video

    try:
        return load_video(args.video, cfg.num_conditioning_frames, cfg.height, cfg.width)[None] if args.video else None
    except VideoReadError as err:
        raise ConfigError(str(err)) from None


def _lead_session(cfg, args: argparse.Namespace, device, group) -> int:
    """The session's terminal, video and preview, on the rank that decodes."""
    from longlive.pipeline import InputError, VideoConditionalPipeline
    from longlive.session import Session, run_terminal

    require_video_writer()
    output = Path(args.output or Path(cfg.output_folder) / "session.mp4")
    preview = Path(args.preview) if args.preview else output.with_suffix(".png")
    prompt = args.prompt
    if prompt is None:
        print("first prompt: ", end="", file=sys.stderr, flush=True)
        prompt = sys.stdin.readline()
    video = _session_video(cfg, args)
    try:
        pipeline = VideoConditionalPipeline.from_config(cfg, device, group=group)
        session = Session(
            pipeline, prompt, video, seed=cfg.seed, output=output, preview=preview, max_frames=args.max_frames
        )
    except (InputError, VideoReadError) as err:
        raise ConfigError(str(err)) from None
    status = run_terminal(session, sys.stdin)
    if status.block < 0:  # stopped before the first block: release the ranks waiting for its prompt
        parallel.agree(None, pipeline.group)
    logging.getLogger("longlive").info("session video in %s, latest frame in %s", output, preview)
    return 0


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.description = "A web page that steers one live session (see README, 'longlive serve')."
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; off loopback a token is required")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--token", help="the token pages must give (default: generated when off loopback)")
    parser.add_argument("--max_upload_mb", type=int, default=64, help="largest conditioning upload")
    parser.add_argument(
        "--no_pace", action="store_true", help="generate as fast as the device can (no real-time pacing)"
    )


def run_serve(cfg, args: argparse.Namespace) -> int:
    """`longlive serve`: build the pipeline once, then serve the page until interrupted."""
    try:
        from longlive.server import ServeSettings, serve
    except ImportError as err:
        raise ConfigError(
            f"longlive serve needs the serve extra ({err.name} is missing): pip install -e '.[serve]'"
        ) from None
    from longlive.pipeline import VideoConditionalPipeline

    require_video_writer()
    settings = ServeSettings(
        host=args.host,
        port=args.port,
        token=args.token,
        max_upload_bytes=args.max_upload_mb << 20,
        pace=not args.no_pace,
        work_dir=Path(cfg.output_folder) / "serve",
    )
    serve(VideoConditionalPipeline.from_config(cfg), settings, args.config_path)
    return 0


def check_weights(paths: Sequence[str], model_name: str, use_ema: bool) -> int:
    from longlive.check_weights import check_file

    results = [check_file(path, model_name, use_ema) for path in paths]
    for result in results:
        print(result.line())
    return 0 if all(r.error is None for r in results) else 1


def bench(cfg, profile: bool = False) -> int:
    """Speed at the config's geometry; under torchrun with `parallel.sequence=N`, one stream over N ranks
    (every rank runs it, rank 0 prints)."""
    import json

    from longlive.benchmark import benchmark_pipeline, profile_block, run_benchmark
    from longlive.pipeline import resolve_device

    with distributed.launch(resolve_device(cfg.device)) as world:
        group = _one_stream_group(cfg, world, "longlive bench")
        result = run_benchmark(cfg, pipe=benchmark_pipeline(cfg, world.device, group))
        if world.is_main:
            print(json.dumps(result))
        if profile:
            table = profile_block(cfg, pipe=benchmark_pipeline(cfg, world.device, group))
            if world.is_main:
                print(table)
    return 0


def bench_job(cfg, command: str) -> int:
    """`longlive bench --job COMMAND`: the job's frames/s and host memory as one JSON line."""
    import json

    from longlive.benchmark import run_job_benchmark

    if cfg.data_path is None or not Path(cfg.data_path).is_file():
        raise ConfigError(f"data_path {'is not set' if cfg.data_path is None else f'not found: {cfg.data_path}'}")
    require_video_writer()
    print(json.dumps(run_job_benchmark(cfg, JOBS[command], command)))
    return 0


def job_entry(command: str) -> int:
    """Entry for the root scripts: `python video_conditional_inference.py --config_path ...`."""
    return main([command, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
