"""LongLive's `utils.dataset` names, re-exported from `longlive.datasets`: no logic lives here."""

from longlive.datasets import (
    ImageToVideoDataset,
    InteractiveDataset,
    SampleError,
    TextDataset,
    VideoConditionalDataset,
)

__all__ = ["ImageToVideoDataset", "InteractiveDataset", "SampleError", "TextDataset", "VideoConditionalDataset"]
