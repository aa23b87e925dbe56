"""What a browser gets from `longlive serve`: typed prompt -> first frame under it, and frames/s delivered.

A WebSocket client standing in for the page (the same protocol: binary frames with `FRAME_HEADER`, JSON
state): it starts a session, lets `--warmup_blocks` pass (compilation, CUDA graphs) and one untimed prompt
switch (the recache pass compiles on its first use), then types a new prompt `--switches` times,
`--gap_blocks` blocks apart, and times each from the POST to the arrival of the first frame of the block
where that prompt took over. Frames/s delivered counts every frame received
after the warm-up. One JSON line on stdout.

    longlive serve --config_path configs/longlive_interactive_inference.yaml \\
        wan_model_dir=null generator_ckpt=null lora_ckpt=null compile_generator=true cuda_graphs=true \\
        fold_vae_convs=true fuse_vae_norms=true compile_vae=true fuse_ffn_gelu=true --no_pace &
    python scripts/serve_latency.py --url http://127.0.0.1:7860/

Without `--no_pace` the server holds the rollout to real time (the video's fps), as a viewer watches it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from urllib.parse import urlencode, urlsplit

from websockets.sync.client import connect

from longlive.server import CLIENT_HEADER, FRAME_HEADER

CLIENT = "serve-latency"


def post(base: str, path: str, body: dict, token: str | None) -> dict:
    headers = {"content-type": "application/json", CLIENT_HEADER: CLIENT}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base + path, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


class Stream:
    """The WebSocket, remembering when each block's first frame arrived and the latest state."""

    def __init__(self, socket) -> None:
        self.socket = socket
        self.first_frame_at: dict[int, float] = {}  # block -> arrival of its first frame
        self.frames = 0
        self.state: dict = {}

    def pump(self, until, timeout: float = 900.0) -> None:
        """Read messages until `until()` holds."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no progress within {timeout:.0f} s; last state: {self.state.get('session')}")
            message = self.socket.recv(timeout=timeout)
            now = time.perf_counter()
            if isinstance(message, bytes):
                _, block = FRAME_HEADER.unpack_from(message)
                self.first_frame_at.setdefault(block, now)
                self.frames += 1
            else:
                self.state = json.loads(message)

    def blocks(self) -> int:
        return len(self.first_frame_at)


def stream_url(base: str, token: str | None) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = urlencode({"client": CLIENT, **({"token": token} if token else {})})
    return f"{scheme}://{parts.netloc}{parts.path}ws?{query}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--token")
    parser.add_argument("--prompt", default="a red fox runs through a snowy forest, cinematic")
    parser.add_argument("--warmup_blocks", type=int, default=10)
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument("--gap_blocks", type=int, default=3)
    args = parser.parse_args(argv)
    base = args.url if args.url.endswith("/") else args.url + "/"

    with connect(stream_url(base, args.token), max_size=None) as socket:
        result = measure(Stream(socket), base, args)
    print(json.dumps(result))
    return 0


def measure(stream: Stream, base: str, args: argparse.Namespace) -> dict:
    """Start, warm up (blocks, then one untimed switch: the recache pass compiles on its first use), switch
    `args.switches` times; the figures as a dict."""
    post(base, "api/start", {"prompt": args.prompt, "seed": 0, "length": None}, args.token)
    stream.pump(lambda: stream.blocks() >= args.warmup_blocks)
    switch(stream, base, args, f"{args.prompt}, warm-up: the light turns grey")
    frames0, tick = stream.frames, time.perf_counter()
    latencies = [
        switch(stream, base, args, f"{args.prompt}, scene {i + 1}: the light turns {'golden' if i % 2 else 'blue'}")
        for i in range(args.switches)
    ]
    seconds = time.perf_counter() - tick
    session = stream.state.get("session") or {}
    post(base, "api/stop", {}, args.token)
    return {
        "prompt_to_first_frame_s": {
            "median": round(statistics.median(latencies), 3),
            "min": round(min(latencies), 3),
            "max": round(max(latencies), 3),
            "all": [round(x, 3) for x in latencies],
        },
        "delivered_fps": round((stream.frames - frames0) / seconds, 2),
        "frames_received": stream.frames,
        "server_generation_fps": session.get("generation_fps"),
        "gpu_memory_gib": session.get("gpu_memory_gib"),
        "gpu_peak_gib": session.get("gpu_peak_gib"),
        "dropped_blocks": session.get("dropped_blocks"),
    }


def switch(stream: Stream, base: str, args: argparse.Namespace, prompt: str) -> float:
    """Type `prompt`; wait for the first frame of the block it took over, then `args.gap_blocks` more blocks.
    Returns the seconds from the POST to that first frame."""
    sent = time.perf_counter()
    post(base, "api/prompt", {"prompt": prompt}, args.token)

    def landed() -> dict | None:
        timeline = (stream.state.get("session") or {}).get("timeline", [])
        return next((e for e in timeline if e["prompt"] == prompt), None)

    stream.pump(lambda: landed() is not None and landed()["block"] in stream.first_frame_at)
    latency = stream.first_frame_at[landed()["block"]] - sent
    target = stream.blocks() + args.gap_blocks
    stream.pump(lambda: stream.blocks() >= target)
    return latency


if __name__ == "__main__":
    sys.exit(main())
