"""Job inputs in LongLive's formats: JSONL of conditioning samples (videos or images), text files of prompts.

Each line is parsed when its sample is taken, so one bad line fails that sample alone, with an
error naming the file and line. Sample `i` is file line `i + 1`, blank lines included (as LongLive
counts its prompt files): a blank line is a sample with nothing to do (`BlankLine`), which a job
records as skipped, so the indices and line numbers of every later line stay those of the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from longlive.config import ConfigError


class SampleError(ValueError):
    """One input sample is unusable; the message names the file, the line and the problem."""


class BlankLine(SampleError):
    """The sample's line is blank: nothing to generate (a job records it as skipped, not failed)."""


def check_data_path(data_path: str | Path | None, what: str = "an input file") -> Path:
    """`data_path` as a readable file, or one ConfigError saying what is wrong and what it should hold."""
    if data_path is None:
        raise ConfigError(f"data_path is not set: give {what}")
    path = Path(data_path)
    if path.is_dir():
        raise ConfigError(f"data_path {path} is a directory: give {what}")
    if not path.is_file():
        raise ConfigError(f"data_path not found: {path}")
    return path


def _read_lines(path: str | Path) -> list[str]:
    """Every line of the file, blank ones included, so that sample i is line i + 1."""
    path = check_data_path(path)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"data_path {path} is not UTF-8 text (byte {err.start})") from None


def _line(path: Path, lines: list[str], idx: int) -> tuple[str, str]:
    """Line `idx` and its `file:line`; a blank line raises `BlankLine`."""
    where = f"{path}:{idx + 1}"
    if not lines[idx].strip():
        raise BlankLine(f"{where}: blank line, nothing to generate")
    return where, lines[idx]


class JsonlDataset(Dataset):
    """JSONL lines holding `KEYS` (non-empty strings); `PATH_KEY`'s file resolves against the working
    directory, then the JSONL's folder."""

    KEYS: tuple[str, ...] = ()
    PATH_KEY = ""

    def __init__(self, data_path: str | Path) -> None:
        self.data_path = Path(data_path)
        self.lines = _read_lines(data_path)

    def __len__(self) -> int:
        return len(self.lines)

    def raw(self, idx: int) -> str:
        """Line `idx` as written in the file (for the results of a sample that cannot be parsed)."""
        return self.lines[idx]

    def parse(self, idx: int) -> tuple[str, Any]:
        """Line `idx` decoded, with its `file:line` for errors."""
        where, line = _line(self.data_path, self.lines, idx)
        try:
            return where, json.loads(line)
        except json.JSONDecodeError as err:
            raise SampleError(f"{where}: not valid JSON ({err.msg})") from None

    def __getitem__(self, idx: int) -> dict[str, Any]:
        where, record = self.parse(idx)
        if not isinstance(record, dict):
            raise SampleError(f"{where}: expected a JSON object with keys {list(self.KEYS)}")
        for key in self.KEYS:
            value = record.get(key)
            if not isinstance(value, str) or not value.strip():
                problem = "missing" if key not in record else "empty or not a string"
                raise SampleError(f"{where}: key '{key}' is {problem}")
        sample = {"idx": idx, **{key: record[key] for key in self.KEYS}}
        sample[self.PATH_KEY] = str(self._resolve(record[self.PATH_KEY]))
        return sample

    def _resolve(self, file_path: str) -> Path:
        path = Path(file_path)
        if path.is_absolute() or path.exists():
            return path
        beside = self.data_path.parent / path
        return beside if beside.exists() else path


class VideoConditionalDataset(JsonlDataset):
    """JSONL lines `{"video_path", "prompt1", "prompt2"}`; relative video paths resolve against the
    working directory, then the JSONL's folder."""

    KEYS = ("video_path", "prompt1", "prompt2")
    PATH_KEY = "video_path"


class ImageToVideoDataset(JsonlDataset):
    """JSONL lines `{"image_path", "prompt"}`: the image is the first frame, the prompt the whole video."""

    KEYS = ("image_path", "prompt")
    PATH_KEY = "image_path"


class InteractiveDataset(JsonlDataset):
    """JSONL lines `{"prompts": [p0, p1, ...]}` (LongLive's interactive format): p0 starts the video, each
    next prompt starts at the next of `num_switches` switch frames, so a line needs `num_switches + 1`."""

    def __init__(self, data_path: str | Path, num_switches: int) -> None:
        super().__init__(data_path)
        self.num_switches = num_switches

    def __getitem__(self, idx: int) -> dict[str, Any]:
        where, record = self.parse(idx)
        prompts = record.get("prompts") if isinstance(record, dict) else None
        if not isinstance(prompts, list) or not prompts:
            raise SampleError(f'{where}: expected a JSON object {{"prompts": [prompt, ...]}}')
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise SampleError(f"{where}: prompts[{i}] is empty or not a string")
        if len(prompts) != self.num_switches + 1:
            raise SampleError(
                f"{where}: {len(prompts)} prompts need {len(prompts) - 1} switch frames, but switch_frame_indices "
                f"gives {self.num_switches}; give {self.num_switches + 1} prompts or change switch_frame_indices"
            )
        return {"idx": idx, "prompts": list(prompts)}


class TextDataset(Dataset):
    """One prompt per line, as LongLive's text-to-video job reads them."""

    def __init__(self, prompt_path: str | Path) -> None:
        self.data_path = Path(prompt_path)
        self.prompts = _read_lines(prompt_path)

    def __len__(self) -> int:
        return len(self.prompts)

    def raw(self, idx: int) -> str:
        return self.prompts[idx]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        _, line = _line(self.data_path, self.prompts, idx)
        return {"idx": idx, "prompts": line.strip()}
