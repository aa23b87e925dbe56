"""`longlive serve` through Starlette's test client: the API, the stream, access, uploads, misbehaving clients.

A tiny random model (the interactive config, with conditioning frames allowed for the upload tests) runs
real sessions on the CPU; frames travel as they would to a browser (binary JPEG over the WebSocket).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette", reason="longlive serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (the dev extra)")

from starlette.testclient import TestClient, WebSocketDenialResponse  # noqa: E402

from longlive import live_run  # noqa: E402
from longlive.config import load_config  # noqa: E402
from longlive.distributed import World  # noqa: E402
from longlive.jobs import run_interactive_job  # noqa: E402
from longlive.pipeline import VideoConditionalPipeline  # noqa: E402
from longlive.server import FRAME_HEADER, LiveServer, ServeSettings, Viewer, build_app, resolve_token  # noqa: E402
from longlive.video_io import read_frames, write_frames  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tiny_interactive.yaml"
BASE = "http://127.0.0.1:7860"
WS = "ws://127.0.0.1:7860/ws"
ME = {"x-longlive-client": "me"}
A, B = "a red square moves right", "the square turns blue"


@pytest.fixture(scope="module")
def pipeline(one_thread):
    return VideoConditionalPipeline.from_config(
        load_config(CONFIG, ["num_conditioning_frames=5", "num_output_frames=30"])
    )


@pytest.fixture
def serve(pipeline, tmp_path) -> Iterator[Callable[..., tuple[LiveServer, TestClient]]]:
    """`serve(**settings)` -> (server, client) on a loopback base URL; every session is stopped after the test.
    Unpaced unless a test asks (the tiny model outruns real time)."""
    clients = []

    def make(**settings) -> tuple[LiveServer, TestClient]:
        settings = resolve_token(ServeSettings(**{"work_dir": tmp_path / "serve", "pace": False, **settings}))
        server = LiveServer(pipeline, settings, str(CONFIG))
        client = TestClient(build_app(server), base_url=BASE).__enter__()
        clients.append(client)
        return server, client

    yield make
    for client in clients:
        client.__exit__(None, None, None)  # the lifespan stops a running session


def wait_for(client: TestClient, check: Callable[[dict], bool], timeout: float = 60.0, who: dict = ME) -> dict:
    """Poll /api/state until `check(state)` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get("/api/state", headers=who).json()
        if check(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"timed out; last state: {state}")


def session_of(state: dict) -> dict:
    return state["session"] or {}


def decode_jpeg(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_start_stream_switch_and_download(serve, tmp_path):
    """Frames stream in order as JPEG; a typed prompt is pending, then lands at a block boundary with its
    recache on the timeline; the mp4 holds every frame, the same frames the page was sent."""
    server, client = serve()
    streamed: dict[int, np.ndarray] = {}
    pending_seen = False
    with client.websocket_connect(f"{WS}?client=me") as ws:
        assert json.loads(ws.receive_text())["session"] is None
        assert client.post("/api/start", json={"prompt": A, "seed": 3, "length": 15}, headers=ME).json() == {"ok": True}
        while True:
            message = ws.receive()
            if message.get("bytes") is not None:
                index, block = FRAME_HEADER.unpack_from(message["bytes"])
                streamed[index] = decode_jpeg(message["bytes"][FRAME_HEADER.size :])
                if len(streamed) == 10:  # inside block 1: the switch lands at block 2
                    assert client.post("/api/prompt", json={"prompt": f"  {B} "}, headers=ME).status_code == 200
                continue
            state = json.loads(message["text"])
            assert state["you_steer"]
            pending_seen |= session_of(state).get("pending") == B
            if session_of(state).get("done"):
                break
    session = session_of(state)
    assert (session["frames"], session["latent_frames"], session["block"]) == (57, 15, 4)
    assert pending_seen and session["pending"] is None and session["latency_s"] > 0
    first, switch = session["timeline"]
    assert (first["block"], first["frame"], first["video_frame"], first["prompt"], first["recached"]) == (
        0,
        0,
        0,
        A,
        None,
    )
    # Typed during block 1, it lands where the next block the pipeline asks for starts: block 2 or 3.
    assert switch["block"] in (2, 3) and switch["frame"] == 3 * switch["block"] and switch["prompt"] == B
    # tiny_interactive (sink 1, local_attn_size 6), LongLive's recache: at frame 6 the early switch reruns
    # [0, 6), sink included; at 9 the late one the latest 5 frames, [4, 9).
    assert switch["recached"] == {6: [0, 6], 9: [4, 9]}[switch["frame"]]
    assert switch["video_frame"] == 9 + 12 * (switch["block"] - 1)  # the frames of the blocks before it
    assert sorted(streamed) == list(range(57))  # every frame, in order, nothing dropped for a fast reader

    response = client.get("/api/video.mp4")
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    (tmp_path / "got.mp4").write_bytes(response.content)
    video = read_frames(tmp_path / "got.mp4")
    assert video.shape == (57, 32, 48, 3)
    sent = np.stack([streamed[i] for i in range(57)]).astype(float)
    error = np.abs(video.astype(float) - sent).mean()  # both lossy, at 32x48 on noise-like frames
    other = np.abs(video.astype(float) - np.roll(sent, 12, axis=0)).mean()  # each frame against another block's
    assert error < other / 2, (error, other)
    assert not list((server.settings.work_dir).glob("download-*")), "the download's temp file stays"


def test_timeline_replays_as_interactive_job(serve, tmp_path, monkeypatch):
    """The downloaded timeline is a line of interactive_inference.py's JSONL; its overrides replay the session:
    the job makes the session's latents again (compared as latents: the session's mp4 segments and the job's
    mp4 are encoded with different settings)."""
    made = []  # the session's latents, block by block, seen where the server records a block
    record_block = live_run.LiveRun._record
    monkeypatch.setattr(
        live_run.LiveRun,
        "_record",
        lambda run, result, s: (made.append(result.latents[0]), record_block(run, result, s)),
    )
    server, client = serve()
    client.post("/api/start", json={"prompt": A, "seed": 5, "length": 12}, headers=ME)
    wait_for(client, lambda s: session_of(s).get("block", -1) >= 0)
    client.post("/api/pause", headers=ME)  # switch exactly once, at a boundary the test knows
    state = wait_for(client, lambda s: session_of(s).get("paused"))
    client.post("/api/prompt", json={"prompt": B}, headers=ME)
    client.post("/api/resume", headers=ME)
    state = wait_for(client, lambda s: session_of(s).get("done"))
    live = tmp_path / "live.mp4"
    live.write_bytes(client.get("/api/video.mp4").content)

    line = client.get("/api/timeline.jsonl").text
    record = json.loads(line)
    switch = session_of(state)["timeline"][1]["frame"]
    assert record["prompts"] == [A, B] and record["switch_frame_indices"] == [switch]
    assert record["num_output_frames"] == 12 and record["seed"] == 5
    assert "interactive_inference.py" in record["replay"] and f"switch_frame_indices=[{switch}]" in record["replay"]
    (tmp_path / "timeline.jsonl").write_text(line)

    def replay(frame: int) -> torch.Tensor:
        out = tmp_path / f"replay{frame}"
        overrides = [
            f"data_path={tmp_path / 'timeline.jsonl'}",
            f"switch_frame_indices=[{frame}]",
            f"num_output_frames={record['num_output_frames']}",
            f"seed={record['seed']}",
            f"output_folder={out}",
            "save_latents=true",
        ]
        cfg = load_config(CONFIG, overrides)
        # Random weights are seeded by `seed` too (published weights are not): the replay's model is the server's.
        same_weights = VideoConditionalPipeline.from_config(load_config(CONFIG, overrides[:-3]))
        report = run_interactive_job(cfg, same_weights, World())
        assert report.written, report.failed
        return torch.load(Path(report.written[0]).with_suffix(".pt"), weights_only=True)

    ours = torch.cat(made)  # [12, C, h, w]
    assert read_frames(live).shape[0] == 4 * 12 - 3  # the download has every frame
    torch.testing.assert_close(replay(switch), ours, rtol=0, atol=1e-5)
    late = replay(switch + 3)  # the switch a block late: the same latents before the switch, others from it
    torch.testing.assert_close(late[:switch], ours[:switch], rtol=0, atol=1e-5)
    assert (late[switch:] - ours[switch:]).abs().mean() > 0.1


def test_pause_resume_stop_and_download_so_far(serve, tmp_path):
    """Paused, no block is made; the mp4 then holds exactly the frames so far; resume continues; stop ends."""
    _, client = serve()
    client.post("/api/start", json={"prompt": A, "length": None}, headers=ME)  # no limit
    wait_for(client, lambda s: session_of(s).get("block", -1) >= 1)
    assert client.post("/api/pause", headers=ME).status_code == 200
    wait_for(client, lambda s: session_of(s).get("paused"))
    time.sleep(0.5)  # a block already under way finishes
    frames = session_of(client.get("/api/state").json())["frames"]
    time.sleep(1.0)
    state = session_of(client.get("/api/state").json())
    assert state["frames"] == frames and state["paused"] and state["length"] is None
    (tmp_path / "so_far.mp4").write_bytes(client.get("/api/video.mp4").content)
    assert read_frames(tmp_path / "so_far.mp4").shape[0] == frames

    client.post("/api/resume", headers=ME)
    wait_for(client, lambda s: session_of(s)["frames"] > frames and not session_of(s)["paused"])
    client.post("/api/stop", headers=ME)
    state = session_of(wait_for(client, lambda s: session_of(s)["done"]))
    assert state["latent_frames"] < 30 and not state["error"]
    assert client.post("/api/pause", headers=ME).status_code == 409  # nothing runs any more


def test_no_limit_runs_past_the_config_length(serve):
    """No limit is no end: the session plans its blocks as it goes, past the config's num_output_frames (the
    batch jobs' length), until stopped."""
    server, client = serve()
    client.post("/api/start", json={"prompt": A, "length": None}, headers=ME)
    limit = server.base_cfg.num_output_frames
    state = session_of(wait_for(client, lambda s: session_of(s).get("latent_frames", 0) > limit + 3))
    assert state["length"] is None and not state["done"] and server.run.session.max_frames is None
    client.post("/api/stop", headers=ME)
    assert session_of(wait_for(client, lambda s: session_of(s)["done"]))["error"] is None


def test_busy_page_watches_and_takes_over(serve):
    """A second page gets a clear 409 "busy" and a read-only view until it takes over; then the first is refused."""
    _, client = serve()
    other = {"x-longlive-client": "other"}
    client.post("/api/start", json={"prompt": A, "length": None}, headers=ME)
    with client.websocket_connect(f"{WS}?client=other") as ws:
        first = json.loads(ws.receive_text())
        assert first["session"] is not None and not first["you_steer"]
        for path, body in (("/api/prompt", {"prompt": B}), ("/api/start", {"prompt": B})):
            refused = client.post(path, json=body, headers=other)
            assert refused.status_code == 409 and "take over" in refused.json()["error"]
        assert client.post("/api/takeover", headers=other).status_code == 200
        assert client.post("/api/prompt", json={"prompt": B}, headers=other).status_code == 200
        assert client.post("/api/pause", headers=ME).status_code == 409
        assert wait_for(client, lambda s: s["you_steer"], who=other)
    client.post("/api/stop", headers=other)


def test_token_required_off_localhost(serve):
    """Bound off loopback: a token is generated; HTTP and WebSocket requests without it get 401."""
    server, client = serve(host="0.0.0.0")
    token = server.settings.token
    assert token and len(token) >= 24
    for path in ("/", "/static/app.js", "/api/state", "/api/video.mp4", "/api/timeline.jsonl"):
        assert client.get(path).status_code == 401, path
        assert client.get(f"{path}?token=wrong").status_code == 401, path
    assert client.post("/api/start", json={"prompt": A}, headers=ME).status_code == 401
    assert client.get(f"/?token={token}").status_code == 200
    assert client.get("/api/state", headers={"authorization": f"Bearer {token}"}).status_code == 200
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect(WS):
            pass
    assert denied.value.status_code == 401
    with client.websocket_connect(f"{WS}?token={token}") as ws:
        assert json.loads(ws.receive_text())["type"] == "state"

    _, local = serve(token="s3cret")  # on loopback, a token the user set is required too
    assert local.get("/api/state").status_code == 401 and local.get("/api/state?token=s3cret").status_code == 200


def test_loopback_refuses_other_hosts_and_cross_site_posts(serve):
    """Another site cannot drive a loopback server: a foreign Host (DNS rebinding), a POST without the page's
    header (a plain cross-site form), a WebSocket from another origin are refused."""
    _, client = serve()
    assert client.get("/api/state", headers={"host": "evil.example:7860"}).status_code == 403
    assert client.post("/api/start", json={"prompt": A}).status_code == 403
    with pytest.raises(WebSocketDenialResponse):
        with client.websocket_connect(WS, headers={"origin": "http://evil.example"}):
            pass
    with client.websocket_connect(WS, headers={"origin": "http://127.0.0.1:7860"}) as ws:
        assert json.loads(ws.receive_text())["type"] == "state"


def test_bad_requests_answer_one_line(serve, caplog):
    """Bad prompts, bodies and commands get 4xx with one line for the page and one log line; nothing breaks."""
    server, client = serve(max_prompt_chars=50)
    caplog.set_level(logging.WARNING, logger="longlive.server")
    cases = [
        ("/api/start", {"prompt": "   "}, 400, "the prompt is empty"),
        ("/api/start", {"prompt": "x" * 51}, 400, "at most 50"),
        ("/api/start", {"prompt": A, "seed": "one"}, 400, "seed must be an integer"),
        ("/api/start", {"prompt": A, "length": 0}, 400, "nothing to generate"),
        ("/api/start", {"prompt": A, "upload": "nope"}, 400, "upload the file again"),
        ("/api/prompt", {"prompt": B}, 409, "no session is running"),
        ("/api/rm", {}, 404, "no such command"),
    ]
    for path, body, status, text in cases:
        response = client.post(path, json=body, headers=ME)
        assert response.status_code == status and text in response.json()["error"], (path, body, response.text)
    response = client.post("/api/start", content=b"{not json", headers=ME)
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    assert len([r for r in caplog.records if r.name == "longlive.server"]) == len(cases) + 1
    assert client.get("/api/state").status_code == 200 and server.run is None


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_uploads_decoded_by_content_and_limited(serve, tmp_path):
    """An image or video is decoded by its bytes (names are not sent); too large, empty, broken or not a
    video: refused with one line, and the server carries on; a good upload conditions the next session."""
    server, client = serve(max_upload_bytes=200_000)
    upload = lambda data: client.post("/api/upload", content=data, headers=ME)  # noqa: E731
    assert upload(b"\0" * 200_001).status_code == 413
    assert upload(b"").status_code == 400
    text = upload(b"this is not a video, whatever its name says\n" * 50)
    assert text.status_code == 400 and "neither an image nor a video" in text.json()["error"]
    broken = upload(png_bytes((255, 0, 0))[:60])
    assert broken.status_code == 400 and "broken" in broken.json()["error"]
    assert not list((server.settings.work_dir / "uploads").iterdir()), "uploads are deleted once decoded"

    clip = np.zeros((8, 24, 36, 3), np.uint8)
    clip[..., 2] = 255  # a blue video, 8 frames: more than the 5 conditioning frames
    write_frames(tmp_path / "clip.mp4", clip, 8)
    video = upload((tmp_path / "clip.mp4").read_bytes())
    assert video.status_code == 200 and video.json()["kind"].startswith("video 36x24")
    short = np.zeros((2, 24, 36, 3), np.uint8)
    write_frames(tmp_path / "short.mp4", short, 8)
    assert "5 are needed" in upload((tmp_path / "short.mp4").read_bytes()).json()["error"]

    image = upload(png_bytes((0, 200, 0)))
    assert image.status_code == 200 and image.json()["kind"] == "PNG image 40x30"
    start = client.post("/api/start", json={"prompt": A, "length": 6, "upload": image.json()["upload"]}, headers=ME)
    assert start.status_code == 200
    state = session_of(wait_for(client, lambda s: session_of(s).get("done")))
    assert state["conditioning"] == "PNG image 40x30" and state["frames"] == 1 + 4 * 5  # 1 latent from the image
    first = session_of(client.get("/api/state").json())
    assert first["error"] is None
    assert server.pipeline.cfg is server.base_cfg  # the image's config lasted only its first block
    json_line = json.loads(client.get("/api/timeline.jsonl").text)
    assert json_line["conditioned_on_upload"] is True


def test_slow_viewer_loses_frames_not_the_rollout(serve, monkeypatch):
    """A viewer that cannot keep up keeps only its newest frames; a JPEG encoder that falls behind drops
    whole blocks from the stream; either way the rollout runs on and the mp4 keeps every frame."""
    viewer = Viewer("slow", max_frames=4)
    server, client = serve(encoder_blocks=1)
    server.viewers.add(viewer)
    for index in range(10):
        server._queue_frame(FRAME_HEADER.pack(index, 0))
    assert [FRAME_HEADER.unpack(p)[0] for p in viewer.frames] == [6, 7, 8, 9] and viewer.dropped == 6
    server.viewers.discard(viewer)

    encode = live_run.encode_jpeg
    monkeypatch.setattr(live_run, "encode_jpeg", lambda frame, q: (time.sleep(0.25), encode(frame, q))[1])
    tick = time.monotonic()
    client.post("/api/start", json={"prompt": A, "length": 15}, headers=ME)
    state = session_of(wait_for(client, lambda s: session_of(s).get("done")))
    assert state["dropped_blocks"] >= 1 and state["frames"] == 57
    assert time.monotonic() - tick < 57 * 0.25, "the rollout waited for the encoder"


def test_disconnects_and_prompt_bursts(serve, caplog):
    """Pages leaving mid-stream are one log line each; a burst of prompts lands its last one; the session
    and the server go on."""
    caplog.set_level(logging.INFO, logger="longlive.server")
    _, client = serve()
    client.post("/api/start", json={"prompt": A, "length": None}, headers=ME)
    for _ in range(3):
        with client.websocket_connect(f"{WS}?client=me") as ws:
            while ws.receive().get("bytes") is None:  # leave right after a frame arrives
                pass
    burst = [f"prompt number {i}" for i in range(40)]
    for prompt in burst:
        assert client.post("/api/prompt", json={"prompt": prompt}, headers=ME).status_code == 200
    state = session_of(wait_for(client, lambda s: session_of(s)["timeline"][-1]["prompt"] == burst[-1]))
    landed = [burst.index(entry["prompt"]) for entry in state["timeline"][1:]]
    assert landed == sorted(set(landed)) and state["pending"] is None and not state["error"]  # each at most once
    assert len(landed) <= state["block"], "more switches than block boundaries"
    left = [r for r in caplog.records if "a page left" in r.getMessage()]
    assert len(left) == 3
    assert wait_for(client, lambda s: s["viewers"] == 0)
    client.post("/api/stop", headers=ME)


def test_cli_prints_the_url_with_a_token_off_loopback(monkeypatch, tmp_path, capsys):
    """`longlive serve --host 0.0.0.0` prints the URL with a generated token and hands uvicorn that host."""
    import uvicorn

    from longlive.cli import main

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(kwargs))
    argv = ["serve", "--config_path", str(CONFIG), "--host", "0.0.0.0", "--port", "7999", f"output_folder={tmp_path}"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "open http://0.0.0.0:7999/?token=" in err and len(err.split("?token=")[1].strip()) >= 24
    assert (served["host"], served["port"]) == ("0.0.0.0", 7999)


def test_pace_holds_the_rollout_to_real_time(serve):
    """Paced, the video made stays within `lead_seconds` (and the block under way) of the wall clock."""
    server, client = serve(pace=True, lead_seconds=0.5)
    tick = time.monotonic()
    client.post("/api/start", json={"prompt": A, "length": None}, headers=ME)
    samples = []
    while time.monotonic() - tick < 3:
        state = session_of(client.get("/api/state").json())
        samples.append((time.monotonic() - tick, state.get("frames", 0)))
        time.sleep(0.1)
    client.post("/api/stop", headers=ME)
    fps, block = 16, 12  # tiny_interactive: 16 fps, 3 latent frames -> 12 video frames per block
    assert all(frames / fps <= elapsed + 0.5 + block / fps for elapsed, frames in samples), samples
    assert samples[-1][1] >= block * 2, samples
