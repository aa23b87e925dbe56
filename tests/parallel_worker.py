"""One interactive rollout of the tiny model, saved per rank; run by tests/test_parallel.py under torchrun
(gloo, CPU) with `parallel.sequence=2`, and called in-process for the one-process reference.

    python -m torch.distributed.run --nproc_per_node=2 tests/parallel_worker.py rollout|session OUT key=value ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from longlive import distributed, parallel
from longlive.config import load_config, switch_frames
from longlive.pipeline import PromptSchedule, VideoConditionalPipeline
from longlive.session import Session

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny_interactive.yaml"
PROMPTS = ("a red square", "it turns blue", "it stops")


def rollout(out: Path, overrides: list[str]) -> None:
    """Stream the prompts of `PROMPTS` at the config's switch frames; save this rank's latents (every
    block, float32), frames (when it decodes) and the switches into `out/rank{R}.pt`."""
    cfg = load_config(CONFIG, overrides)
    with distributed.launch("cpu") as world:
        group = parallel.stream_group(world, cfg.parallel.sequence, cfg.parallel.vae_rank)
        pipe = VideoConditionalPipeline.from_config(cfg, world.device, group=group)
        schedule = PromptSchedule(PROMPTS[: len(switch_frames(cfg)) + 1], switch_frames(cfg))
        latents, frames, switches = [], [], []
        for result in pipe.stream_prompts(schedule, seed=cfg.seed):
            latents.append(result.latents.clone())
            if result.frames is not None:
                frames.append(result.frames.clone())
            if result.switch is not None:
                switches.append(result.switch.recached)
        record = {
            "latents": torch.cat(latents, dim=1),
            "frames": torch.cat(frames, dim=2) if frames else None,
            "switches": switches,
            "cache_heads": pipe.kv_cache.keys.shape[3],
            "window_rope": pipe.kv_cache.window_rope,
        }
        out.mkdir(parents=True, exist_ok=True)
        torch.save(record, out / f"rank{world.rank}.pt")


SESSION_LIMIT = 5  # latent frames of the second session: blocks of 3 and 2


def session(out: Path, overrides: list[str]) -> None:
    """A live session steered block by block: two blocks, a new prompt, one more block, then quit with
    blocks left (the other ranks must stop too); then a session with `max_frames` run to its end. The
    decoding rank saves its latents; the others follow."""
    cfg = load_config(CONFIG, overrides)
    with distributed.launch("cpu") as world:
        group = parallel.stream_group(world, cfg.parallel.sequence, cfg.parallel.vae_rank)
        pipe = VideoConditionalPipeline.from_config(cfg, world.device, group=group)
        if not pipe.decodes:
            parallel.follow_session(pipe, None, cfg.seed)
            parallel.follow_session(pipe, None, cfg.seed, SESSION_LIMIT)
            return
        live = Session(pipe, PROMPTS[0], seed=cfg.seed)
        results = [live.step(), live.step()]
        live.set_prompt(PROMPTS[1])
        results.append(live.step())
        live.close()
        # Then a session with a limit that is no block boundary, run to its end: both ranks stop there.
        limited = Session(pipe, PROMPTS[1], seed=cfg.seed, max_frames=SESSION_LIMIT)
        ends = []
        while (result := limited.step()) is not None:
            ends.append(result.block.end)
        out.mkdir(parents=True, exist_ok=True)
        latents = torch.cat([result.latents[0].float().cpu() for result in results])  # [F, C, h, w]
        frames = torch.cat([result.frames.float().cpu() for result in results], dim=2)  # [1, 3, N, H, W]
        switches = [s.recached for s in live.switches]
        record = {"latents": latents, "frames": frames, "switches": switches, "limited_ends": ends}
        torch.save(record, out / "session.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    (session if sys.argv[1] == "session" else rollout)(Path(sys.argv[2]), sys.argv[3:])
