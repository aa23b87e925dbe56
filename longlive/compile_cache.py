"""Compilation that survives the process: PyTorch's on-disk compile caches in one folder of your choice.

`torch.compile` (compile_generator, compile_vae) spends about 90 s on a job's first sample at the
published size, in every new process. With `compile_cache_dir` set, Inductor keeps its compiled graphs
(the FX graph cache), the AOTAutograd cache and the Triton kernels in that folder, so the next job on
the same machine (same torch, same GPU, same shapes) loads them instead of compiling: Dynamo still
traces, Inductor and Triton do not run again. Applied once, from the entry point, before any compile.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def enable_compile_cache(directory: str | Path | None) -> Path | None:
    """Point PyTorch's compile caches at `directory` (created if needed) and switch them on; None: leave
    PyTorch's defaults (a per-user folder under /tmp, which a reboot or another user may lose)."""
    if directory is None:
        return None
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    path = Path(directory).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    # Inductor reads its folder from the environment each time it looks (Triton's kernels go under it).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ["TRITON_CACHE_DIR"] = str(path / "triton")
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    logger.info("compile cache: %s", path)
    return path
