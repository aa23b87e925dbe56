"""Batch jobs over input files: video-conditional (JSONL) and text-to-video (one prompt per line).

A sample that cannot be used (bad line, missing or short video, empty prompt) fails alone with a
one-line error; every other sample still runs and the job reports the failures at the end.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from longlive.config import ConfigError
from longlive.datasets import SampleError, TextDataset, VideoConditionalDataset
from longlive.pipeline import InputError, VideoConditionalPipeline
from longlive.video_io import VideoReadError, load_video, write_video

logger = logging.getLogger(__name__)

USER_ERRORS = (SampleError, VideoReadError, InputError)


@dataclass
class JobReport:
    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def model_type(cfg: DictConfig) -> str:
    """lora / ema / regular, as LongLive names its outputs."""
    if cfg.lora_ckpt:
        return "lora"
    return "ema" if cfg.use_ema else "regular"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def output_path(cfg: DictConfig, idx: int, seed: int) -> Path:
    return Path(cfg.output_folder) / f"rank{rank()}-{idx}-{seed}_{model_type(cfg)}.mp4"


def sample_seeds(cfg: DictConfig, idx: int) -> list[int]:
    """Seeds follow the sample index (not the process), so outputs do not depend on how work is split."""
    return [cfg.seed + idx * cfg.num_samples + j for j in range(cfg.num_samples)]


def _limit(cfg: DictConfig, count: int) -> int:
    return count if cfg.inference_iter < 0 else min(count, cfg.inference_iter)


def run_video_conditional_job(cfg: DictConfig, pipeline: VideoConditionalPipeline) -> JobReport:
    """Condition on each JSONL line's video under prompt1, continue under prompt2, write mp4s."""
    if cfg.data_path is None:
        raise ConfigError("data_path is not set: give a JSONL of {video_path, prompt1, prompt2} lines")
    dataset = VideoConditionalDataset(cfg.data_path)
    report = JobReport()
    for idx in tqdm(range(_limit(cfg, len(dataset))), desc="samples", disable=rank() != 0):
        try:
            sample = dataset[idx]
            video = load_video(sample["video_path"], cfg.num_conditioning_frames, cfg.height, cfg.width)
            for seed in sample_seeds(cfg, idx):
                result = pipeline(sample["prompt1"], sample["prompt2"], video.unsqueeze(0), seed=seed)
                report.written.append(write_video(output_path(cfg, idx, seed), result.frames[0], cfg.fps))
                logger.info("sample %d (seed %d) -> %s", idx, seed, report.written[-1])
        except USER_ERRORS as err:
            report.failed.append(f"sample {idx}: {err}")
            logger.error("sample %d failed: %s", idx, err)
    return report


def run_text_to_video_job(cfg: DictConfig, pipeline: VideoConditionalPipeline) -> JobReport:
    """Text-to-video: one prompt per line of `data_path`, no conditioning."""
    if cfg.data_path is None:
        raise ConfigError("data_path is not set: give a text file with one prompt per line")
    dataset = TextDataset(cfg.data_path)
    report = JobReport()
    for idx in tqdm(range(_limit(cfg, len(dataset))), desc="prompts", disable=rank() != 0):
        prompt = dataset[idx]["prompts"]
        try:
            for seed in sample_seeds(cfg, idx):
                with torch.no_grad():
                    result = pipeline(prompt, seed=seed)
                report.written.append(write_video(output_path(cfg, idx, seed), result.frames[0], cfg.fps))
        except USER_ERRORS as err:
            report.failed.append(f"prompt {idx}: {err}")
            logger.error("prompt %d failed: %s", idx, err)
    return report
