"""Compilation that survives the process: PyTorch's on-disk compile caches in one folder of your choice.

`torch.compile` (compile_generator, compile_vae) spends about 90 s on a job's first sample at the
published size, in every new process. With `compile_cache_dir` set, Inductor keeps its compiled graphs
(the FX graph cache), the AOTAutograd cache and the Triton kernels in that folder, so the next job on
the same machine (same torch, same GPU, same shapes) loads them instead of compiling: Dynamo still
traces, Inductor and Triton do not run again. Applied once, from the entry point, before any compile.

Dynamo's profile of which input sizes vary (its "PGO" state: the generator's visible cache grows over
the first blocks) goes in the folder too: the first process compiles a block for the first size, then
again with that size dynamic; a later one reads the profile and compiles once, dynamic from the start.
PyTorch keeps that profile only for runs that name themselves alike (`torch.compiler.config.job_id`,
env TORCH_COMPILE_JOB_ID); unnamed, it is neither written nor read. We name ours `PGO_JOB_ID` unless
the environment names one. A profile from another workload can only make a size dynamic that need not
be (a slower kernel, never a wrong one); the VAE decoder compiles with static shapes and ignores it.

PyTorch's mega-cache (`torch.compiler.save_cache_artifacts`/`load_cache_artifacts`) bundles the same
artifacts (Inductor and Triton, AOTAutograd, this profile, autotuning) as one blob, for moving them to
another machine; on the same machine these folders already hold all of it, and neither caches Dynamo's
tracing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# The name under which Dynamo's dynamic-shape profile is kept and found again (see the module doc).
PGO_JOB_ID = "longlive"


def enable_compile_cache(directory: str | Path | None) -> Path | None:
    """Point PyTorch's compile caches at `directory` (created if needed) and switch them on; None: leave
    PyTorch's defaults (a per-user folder under /tmp, which a reboot or another user may lose)."""
    if directory is None:
        return None
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    import torch.compiler.config as compiler_config

    path = Path(directory).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    # Inductor reads its folder from the environment each time it looks (Triton's kernels go under it).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ["TRITON_CACHE_DIR"] = str(path / "triton")
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    compiler_config.job_id = compiler_config.job_id or PGO_JOB_ID  # TORCH_COMPILE_JOB_ID wins
    logger.info("compile cache: %s (dynamic-shape profile as %r)", path, compiler_config.job_id)
    return path
