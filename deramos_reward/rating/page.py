"""The rating page: one static HTML file, its script and its style sheet (no framework, no build step).

The page reads ``rater`` and ``token`` from its own URL (or asks for a rater id), fetches the
rater's next item from ``/api/next`` and posts answers to ``/api/rate``. An answer is taken once
every clip of the item has been heard to its end; until then the page says so, and ``S`` (or the
button beside that note) rates without listening. A long prompt scrolls inside its own box, so the
players and the scales stay in view. Keyboard shortcuts:

- MOS: ``1``-``5`` rate the highlighted scale (MI first, then TA); ``M`` / ``T`` pick a scale;
  ``Enter`` submits; ``Space`` plays or pauses; ``R`` plays from the start; ``S`` skips listening.
- A/B: ``A`` / ``B`` / ``T`` (or ``=``) choose A, B or a tie; ``Enter`` submits; ``1`` / ``2``
  play or pause A / B; ``Space`` pauses both; ``S`` skips listening.
"""

from __future__ import annotations

# MusicEval asks its experts for two 1-5 scores; these are its two dimensions in our words.
MI_DEFINITION = (
    "Overall musical impression: how good the clip is as music, on its own. Judge the melody, "
    "harmony, rhythm, timbre, structure and coherence, and the audio quality (noise, distortion, "
    "glitches). Ignore the text description for this score."
)
TA_DEFINITION = (
    "Text alignment: how well the music matches the text description, e.g. the genre, "
    "instruments, mood, tempo and other attributes it names. Ignore the audio quality for this score."
)
SCALE = ("Bad", "Poor", "Fair", "Good", "Excellent")


def _scale_row(key: str, title: str, definition: str) -> str:
    buttons = "".join(
        f'<button type="button" class="score" data-scale="{key}" data-value="{v}" aria-pressed="false">'
        f"<b>{v}</b><small>{label}</small></button>"
        for v, label in enumerate(SCALE, start=1)
    )
    return (
        f'<fieldset class="scale" id="scale-{key}" data-scale="{key}"><legend>{title}</legend>'
        f'<p class="definition">{definition}</p><div class="buttons">{buttons}</div></fieldset>'
    )


PAGE_HTML = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>deramos rate</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<main>
<header><h1>Listening test <span id="mode-name"></span></h1><div><span id="who-am-i"></span> <span id="progress" aria-live="polite"></span></div></header>
<form id="who" hidden>
  <label for="rater-input">Your rater id</label>
  <input id="rater-input" name="rater" autocomplete="off" pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]{{0,63}}" required>
  <button type="submit">Start</button>
  <p class="hint">Letters, digits, _ . - (your answers are saved under this id; use the same id to resume).</p>
</form>
<section id="rate" hidden>
  <div class="prompt-box"><span class="label">Text description</span><p id="prompt"></p></div>
  <div id="players"></div>
  <p id="listen" hidden><span id="listen-text"></span>
    <button type="button" id="skip">Rate without listening <kbd>S</kbd></button></p>
  <div id="mos" hidden>
    {_scale_row("mi", "MI: musical impression (1-5)", MI_DEFINITION)}
    {_scale_row("ta", "TA: text alignment (1-5)", TA_DEFINITION)}
  </div>
  <div id="ab" hidden>
    <p class="definition">Which clip is better overall, as music and as a match for the text description?</p>
    <div class="buttons choices">
      <button type="button" class="choice" data-choice="a" aria-pressed="false"><b>A</b><small>A is better</small></button>
      <button type="button" class="choice" data-choice="tie" aria-pressed="false"><b>=</b><small>Tie</small></button>
      <button type="button" class="choice" data-choice="b" aria-pressed="false"><b>B</b><small>B is better</small></button>
    </div>
  </div>
  <div class="actions"><button type="button" id="submit" disabled>Submit <kbd>Enter</kbd></button></div>
  <p class="keys" id="keys"></p>
</section>
<section id="finished" hidden><h2>All done, thank you!</h2><p id="finished-text"></p></section>
<p id="status" role="status"></p>
</main>
</body>
</html>
"""

APP_CSS = """
:root { --accent: #2557a7; --muted: #5f6b7a; --line: #d9dee5; --pick: #e3ecfa; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d2430; background: #f4f6f9; }
main { max-width: 780px; margin: 12px auto; background: #fff; border: 1px solid var(--line);
       border-radius: 10px; padding: 20px 28px 24px; }
header { display: flex; justify-content: space-between; align-items: baseline; }
h1 { font-size: 20px; margin: 0 0 12px; }
#mode-name { color: var(--muted); font-weight: normal; }
#progress { color: var(--muted); font-variant-numeric: tabular-nums; }
#who-am-i { color: var(--muted); font-size: 13px; margin-right: 10px; }
.prompt-box { background: #f7f9fc; border-left: 4px solid var(--accent); padding: 8px 14px; margin: 8px 0 10px; }
.prompt-box .label, .player .label { font-size: 12px; text-transform: uppercase; letter-spacing: .04em;
       color: var(--muted); }
#prompt { margin: 2px 0 0; font-size: 17px; max-height: 4.4em; overflow-y: auto; overflow-wrap: anywhere; }
#listen { margin: 6px 0; padding: 6px 10px; border-radius: 6px; background: #fff6e0; color: #6b4d00;
       font-size: 13.5px; display: flex; align-items: center; justify-content: space-between; gap: 10px; }
#skip { font: inherit; font-size: 12.5px; padding: 3px 10px; border: 1px solid #d8b65c; border-radius: 6px;
       background: #fff; color: inherit; cursor: pointer; }
.player { display: flex; align-items: center; gap: 12px; margin: 8px 0; }
.player audio { flex: 1; }
.player .label { width: 16px; font-size: 18px; font-weight: 600; color: var(--accent); }
.judge { font-size: 13px; color: var(--muted); white-space: nowrap; }
fieldset.scale { border: 1px solid var(--line); border-radius: 8px; margin: 10px 0; padding: 6px 14px 12px; }
fieldset.scale.active { border-color: var(--accent); box-shadow: 0 0 0 2px var(--pick); }
legend { font-weight: 600; padding: 0 6px; }
.definition { margin: 2px 0 10px; color: var(--muted); font-size: 13.5px; }
.buttons { display: flex; gap: 8px; }
.buttons button { flex: 1; display: flex; flex-direction: column; align-items: center; padding: 8px 4px;
       border: 1px solid var(--line); border-radius: 8px; background: #fff; cursor: pointer; font: inherit; }
.buttons button b { font-size: 18px; }
.buttons button small { color: var(--muted); font-size: 12px; }
.buttons button:hover { border-color: var(--accent); }
.buttons button[aria-pressed="true"] { background: var(--accent); border-color: var(--accent); color: #fff; }
.buttons button[aria-pressed="true"] small { color: #dbe6f7; }
.actions { margin-top: 14px; text-align: right; }
#submit { font: inherit; padding: 8px 22px; border-radius: 8px; border: 0; background: var(--accent);
       color: #fff; cursor: pointer; }
#submit:disabled { background: #aab4c3; cursor: default; }
kbd { font: 12px ui-monospace, monospace; border: 1px solid currentColor; border-radius: 3px; padding: 0 4px;
       opacity: .8; }
.keys { color: var(--muted); font-size: 12.5px; margin: 12px 0 0; }
.hint { color: var(--muted); font-size: 13px; }
#who { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
#who input { font: inherit; padding: 6px 8px; }
#status { min-height: 1.2em; color: #a32020; margin: 8px 0 0; }
"""

APP_JS = r"""
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const state = { rater: params.get("rater") || "", data: null, mi: 0, ta: 0, choice: "", active: "mi", busy: false,
                heard: new Set(), skipped: false };
const $ = (id) => document.getElementById(id);
const KEYS = {
  mos: "Keys: <kbd>1</kbd>-<kbd>5</kbd> rate the highlighted scale (MI, then TA) · <kbd>M</kbd>/<kbd>T</kbd> pick a scale · " +
       "<kbd>Enter</kbd> submit · <kbd>Space</kbd> play/pause · <kbd>R</kbd> replay · <kbd>S</kbd> skip listening",
  ab: "Keys: <kbd>A</kbd>/<kbd>B</kbd>/<kbd>T</kbd> choose A, B or tie · <kbd>Enter</kbd> submit · " +
      "<kbd>1</kbd>/<kbd>2</kbd> play/pause A/B · <kbd>Space</kbd> pause · <kbd>S</kbd> skip listening",
};

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
}

async function api(method, url, body) {
  const headers = token ? { "X-Deramos-Token": token } : {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let payload = {};
  try { payload = await response.json(); } catch (e) { payload = { error: "HTTP " + response.status }; }
  return { status: response.status, payload };
}

function status(text) { $("status").textContent = text || ""; }

async function loadNext() {
  const { status: code, payload } = await api("GET", "/api/next?rater=" + encodeURIComponent(state.rater));
  if (code !== 200) { status(payload.error || "error " + code); return; }
  status("");
  state.data = payload;
  render();
}

function render() {
  const data = state.data;
  $("mode-name").textContent = data.mode === "ab" ? "· A/B" : "· MOS";
  $("who").hidden = true;
  $("who-am-i").textContent = "rater: " + data.rater;
  if (!data.item) {
    $("rate").hidden = true;
    $("finished").hidden = false;
    $("progress").textContent = data.done + " of " + data.total + " rated";
    $("finished-text").textContent = "You rated all " + data.total + " items as " + data.rater + ".";
    return;
  }
  $("finished").hidden = true;
  $("rate").hidden = false;
  $("progress").textContent = (data.done + 1) + " of " + data.total;
  $("prompt").textContent = data.item.prompt;
  const players = $("players");
  players.textContent = "";
  for (const clip of data.item.clips) {
    const row = document.createElement("div");
    row.className = "player";
    if (data.item.clips.length > 1) {
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = clip.label;
      row.appendChild(label);
    }
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "auto";
    audio.src = withToken(clip.audio);
    audio.dataset.label = clip.label;
    audio.addEventListener("ended", () => { state.heard.add(clip.label); paint(); });
    row.appendChild(audio);
    if (clip.judge) {
      const judge = document.createElement("span");
      judge.className = "judge";
      judge.textContent = "judge: MI " + clip.judge.mi.toFixed(2) + " · TA " + clip.judge.ta.toFixed(2);
      row.appendChild(judge);
    }
    players.appendChild(row);
  }
  $("mos").hidden = data.mode !== "mos";
  $("ab").hidden = data.mode !== "ab";
  $("keys").innerHTML = KEYS[data.mode];
  state.mi = 0; state.ta = 0; state.choice = ""; state.active = "mi";
  state.heard = new Set(); state.skipped = false;
  paint();
}

function paint() {
  for (const b of document.querySelectorAll("button.score")) {
    b.setAttribute("aria-pressed", String(state[b.dataset.scale] === Number(b.dataset.value)));
  }
  for (const f of document.querySelectorAll("fieldset.scale")) {
    f.classList.toggle("active", f.dataset.scale === state.active);
  }
  for (const b of document.querySelectorAll("button.choice")) {
    b.setAttribute("aria-pressed", String(state.choice === b.dataset.choice));
  }
  const waiting = Boolean(state.data && state.data.item) && !listened();
  $("listen").hidden = !waiting;
  if (waiting) {
    const both = state.data.item.clips.length > 1;
    $("listen-text").textContent = both ? "Listen to both clips to the end before you rate them."
                                        : "Listen to the clip to the end before you rate it.";
  }
  $("submit").disabled = !ready() || state.busy;
}

function listened() {
  return state.skipped || state.data.item.clips.every((clip) => state.heard.has(clip.label));
}

function ready() {
  if (!state.data || !state.data.item || !listened()) return false;
  return state.data.mode === "mos" ? state.mi > 0 && state.ta > 0 : state.choice !== "";
}

function skipListening() { state.skipped = true; paint(); }

function setScore(scale, value) {
  state[scale] = value;
  if (scale === "mi") state.active = "ta";
  paint();
}

async function submit() {
  if (!ready() || state.busy) return;
  const data = state.data;
  const answer = data.mode === "mos" ? { mi: state.mi, ta: state.ta } : { choice: state.choice };
  state.busy = true; paint();
  for (const a of document.querySelectorAll("audio")) a.pause();
  try {
    const { status: code, payload } = await api("POST", "/api/rate", { rater: state.rater, item: data.item.id, answer });
    if (code !== 200 && code !== 409) { status(payload.error || "error " + code); return; }
    await loadNext();
  } catch (e) {
    status("could not reach the server: " + e);
  } finally {
    state.busy = false; paint();
  }
}

function toggle(audio) {
  if (!audio) return;
  if (audio.paused) {
    for (const other of document.querySelectorAll("audio")) if (other !== audio) other.pause();
    audio.play();
  } else {
    audio.pause();
  }
}

function onKey(event) {
  if (event.target && event.target.tagName === "INPUT") return;
  if (event.ctrlKey || event.metaKey || event.altKey || !state.data || !state.data.item) return;
  const key = event.key.toLowerCase();
  const audios = document.querySelectorAll("audio");
  let handled = true;
  if (key === "enter") submit();
  else if (key === "s") skipListening();
  else if (state.data.mode === "mos") {
    if (key >= "1" && key <= "5") setScore(state.active, Number(key));
    else if (key === "m" || key === "t") { state.active = key === "m" ? "mi" : "ta"; paint(); }
    else if (key === " ") toggle(audios[0]);
    else if (key === "r" && audios[0]) { audios[0].currentTime = 0; audios[0].play(); }
    else handled = false;
  } else {
    if (key === "a" || key === "b") { state.choice = key; paint(); }
    else if (key === "t" || key === "=") { state.choice = "tie"; paint(); }
    else if (key === "1" || key === "2") toggle(audios[Number(key) - 1]);
    else if (key === " ") for (const a of audios) a.pause();
    else handled = false;
  }
  if (handled) event.preventDefault();
}

function start() {
  if (!state.rater) {
    $("who").hidden = false;
    $("rater-input").focus();
    return;
  }
  loadNext().catch((e) => status("could not reach the server: " + e));
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("button.score")) {
    b.addEventListener("click", () => { state.active = b.dataset.scale; setScore(b.dataset.scale, Number(b.dataset.value)); b.blur(); });
  }
  for (const b of document.querySelectorAll("button.choice")) {
    b.addEventListener("click", () => { state.choice = b.dataset.choice; paint(); b.blur(); });
  }
  $("submit").addEventListener("click", () => { $("submit").blur(); submit(); });
  $("skip").addEventListener("click", () => { $("skip").blur(); skipListening(); });
  document.addEventListener("keydown", onKey);
  $("who").addEventListener("submit", (event) => {
    event.preventDefault();
    state.rater = $("rater-input").value.trim();
    const url = new URL(location.href);
    url.searchParams.set("rater", state.rater);
    history.replaceState(null, "", url);
    start();
  });
  start();
});
"""
