// The longlive live-session page: one WebSocket for frames (binary) and state (JSON), POSTs for commands.
// Text from the server or the user is only ever set through textContent (no HTML is built from it).
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const client = sessionStorage.getItem("longlive-client") || randomId();
sessionStorage.setItem("longlive-client", client);
const $ = (id) => document.getElementById(id);
const screen = $("screen");
const ctx = screen.getContext("2d");

let state = null;          // the latest state message
let uploadId = null;       // the decoded upload waiting for Start
let fps = 16;
let frames = [];           // [{index, block, blob}] waiting to be shown, played at the video's fps
let shownIndex = -1;       // video frame on screen
let maxBacklog = 48;       // frames kept before the oldest are dropped (a tab that fell behind)
let lengthTouched = false;

function randomId() {  // crypto.randomUUID needs a secure context; a page off localhost may not be one
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function withToken(path) {
  return token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path;
}

async function post(path, body, raw) {
  $("error").textContent = "";
  const headers = { "x-longlive-client": client };
  if (!raw) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(withToken(path), { method: "POST", headers, body: raw ? body : JSON.stringify(body || {}) });
  } catch (err) {
    $("error").textContent = `the server did not answer (${err.message})`;
    return null;
  }
  const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) {
    $("error").textContent = answer.error || `HTTP ${response.status}`;
    return null;
  }
  return answer;
}

// -- the stream ------------------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = withToken(`${scheme}://${location.host}${location.pathname.replace(/[^/]*$/, "")}ws?client=${client}`);
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => { $("connection").textContent = "connected"; };
  socket.onclose = () => {
    $("connection").textContent = "disconnected: reconnecting…";
    setTimeout(connect, 1000);
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") {
      render(JSON.parse(event.data));
      return;
    }
    const view = new DataView(event.data);
    frames.push({
      index: view.getUint32(0, true),
      block: view.getUint32(4, true),
      blob: new Blob([event.data.slice(8)], { type: "image/jpeg" }),
    });
    if (frames.length > maxBacklog) frames.splice(0, frames.length - fps);  // behind: jump closer to live
  };
}

function tick() {
  const next = frames.shift();
  if (next) {
    createImageBitmap(next.blob).then((bitmap) => {
      ctx.drawImage(bitmap, 0, 0, screen.width, screen.height);
      bitmap.close();
      shownIndex = next.index;
      screen.dataset.frame = String(next.index);
      moveCursor();
    }).catch(() => {});
  }
  setTimeout(tick, 1000 / fps);
}

// -- the state -------------------------------------------------------------------------------------

function render(message) {
  state = message;
  const cfg = message.config;
  fps = cfg.fps;
  maxBacklog = 3 * fps;
  if (screen.width !== cfg.width || screen.height !== cfg.height) {
    screen.width = cfg.width;
    screen.height = cfg.height;
    screen.style.setProperty("--aspect", `${cfg.width} / ${cfg.height}`);
  }
  if (!lengthTouched) $("length").value = cfg.num_output_frames;
  $("no-limit").disabled = !cfg.no_limit;
  $("upload").disabled = cfg.num_conditioning_frames === 0;
  $("start-prompt").maxLength = $("prompt").maxLength = cfg.max_prompt_chars;
  $("viewers").textContent = `${message.viewers} page${message.viewers === 1 ? "" : "s"} watching`;

  const s = message.session;
  const live = s !== null && !s.done;
  const steer = message.you_steer;
  $("busy").hidden = !(live && !steer);
  $("busy-text").textContent = "A session is running, steered by another page: you are watching it read-only.";
  $("start").disabled = live && !steer;
  for (const id of ["prompt", "pause", "resume", "stop"]) $(id).disabled = !(live && steer);
  $("pause").disabled ||= Boolean(s && s.paused);
  $("resume").disabled ||= !(s && s.paused);
  for (const id of ["download-video", "download-timeline"]) {
    $(id).setAttribute("aria-disabled", String(s === null || s.frames === 0));
  }
  $("download-video").href = withToken("api/video.mp4");
  $("download-timeline").href = withToken("api/timeline.jsonl");
  if (s === null) return;
  $("status").textContent = statusLine(s);
  $("pending").textContent = s.pending ? `pending (next block): ${s.pending}` : "";
  if (s.error) $("error").textContent = s.error;
  renderTimeline(s);
}

function statusLine(s) {
  const what = s.error ? "failed" : s.done ? "done" : s.paused ? "paused" : "running";
  const parts = [
    `block ${s.block}`,
    `${s.frames} frames (${s.latent_frames}${s.length ? "/" + s.length : ""} latent)`,
    `${s.generation_fps.toFixed(2)} fps generated`,
    s.latency_s === null ? "latency -" : `prompt→first frame ${s.latency_s.toFixed(2)} s`,
  ];
  if (s.gpu_memory_gib !== undefined) parts.push(`GPU ${s.gpu_memory_gib} GiB (peak ${s.gpu_peak_gib})`);
  if (s.dropped_blocks) parts.push(`${s.dropped_blocks} blocks not streamed`);
  parts.push(what);
  return parts.join(" | ") + `\nprompt: ${s.prompt}`;
}

function renderTimeline(s) {
  const bar = $("timeline-bar");
  bar.querySelectorAll(".mark").forEach((m) => m.remove());
  const list = $("timeline");
  list.replaceChildren();
  const total = Math.max(s.frames, 1);
  s.timeline.forEach((entry, i) => {
    const mark = document.createElement("div");
    mark.className = i === 0 ? "mark first" : "mark";
    mark.style.left = `${(100 * entry.video_frame) / total}%`;
    mark.title = entry.prompt;
    bar.appendChild(mark);
    const item = document.createElement("li");
    const where = document.createElement("span");
    where.className = "where";
    const recache = entry.recached ? `, recached latent frames [${entry.recached[0]}, ${entry.recached[1]})` : "";
    where.textContent = i === 0
      ? "frame 0, block 0: "
      : `latent frame ${entry.frame} (block ${entry.block}, video frame ${entry.video_frame})${recache}: `;
    item.append(where, document.createTextNode(entry.prompt));
    list.appendChild(item);
  });
  moveCursor();
}

function moveCursor() {
  const total = state && state.session ? Math.max(state.session.frames, 1) : 1;
  $("cursor").style.left = `${(100 * Math.max(shownIndex, 0)) / total}%`;
}

// -- commands --------------------------------------------------------------------------------------

$("start-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const noLimit = $("no-limit").checked;
  const answer = await post("api/start", {
    prompt: $("start-prompt").value,
    seed: Number($("seed").value || 0),
    length: noLimit ? null : Number($("length").value),
    upload: uploadId,
  });
  if (answer) {
    frames = [];
    shownIndex = -1;
    uploadId = null;
    $("upload").value = "";
    $("upload-status").textContent = "";
  }
});

$("prompt-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("prompt").value;
  if (await post("api/prompt", { prompt: text })) $("prompt").value = "";
});

$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  uploadId = null;
  if (!file) return;
  if (state && file.size > state.config.max_upload_bytes) {
    $("upload-status").textContent = "";
    $("error").textContent = `the file is larger than the limit of ${state.config.max_upload_bytes >> 20} MiB`;
    return;
  }
  $("upload-status").textContent = "uploading…";
  const answer = await post("api/upload", file, true);
  $("upload-status").textContent = answer ? `conditioning on: ${answer.kind}` : "";
  if (answer) uploadId = answer.upload;
});

$("length").addEventListener("input", () => { lengthTouched = true; });
for (const name of ["pause", "resume", "stop"]) $(name).addEventListener("click", () => post(`api/${name}`));
$("takeover").addEventListener("click", () => post("api/takeover"));

connect();
tick();
