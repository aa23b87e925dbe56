"""LongLive's `utils.dataset` names, re-exported from `longlive.datasets`: no logic lives here."""

from longlive.datasets import SampleError, TextDataset, VideoConditionalDataset

__all__ = ["SampleError", "TextDataset", "VideoConditionalDataset"]
