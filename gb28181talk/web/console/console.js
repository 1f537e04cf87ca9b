// The talk console: the devices (or, without SIP, sources and sessions) refreshed every
// second, push-to-talk (a WebRTC push of the microphone, then one broadcast to every chosen
// device), two-way talk with the device's voice played here, and a meter for each way.

import { api, ApiError, pageLeaving, secret, setSecret } from "./api.js";
import { Meter } from "./meter.js";
import { connected, openPeer, remoteAudio } from "./rtc.js";
import { broadcastRefusal, explain, insecureNote, sessionGone } from "./words.js";

const APP = "console";
const REFRESH_MS = 1000;
const METER_MS = 100;
const PLAY_TRIES = 20; // the device's voice becomes a source once its first packets arrive

const $ = (id) => document.getElementById(id);

const view = {
  sip: null,
  devices: [],
  broadcasts: [],
  talks: [],
  sessions: [],
  sources: [],
  selected: new Set(),
  rows: new Map(),
  needSecret: false,
};

let ptt = null; // the push-to-talk operation under way
let talk = null; // the two-way talk under way
let audio = null; // AudioContext, made on the first press (browsers want a gesture)
let meterOut = null;
let meterIn = null;

// ------------------------------------------------------------------ words on the page

function say(text, { error = false } = {}) {
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  item.append(time, text);
  if (error) {
    item.className = "error";
  }
  const log = $("log");
  log.prepend(item);
  while (log.children.length > 60) {
    log.lastElementChild.remove();
  }
}

function setState(state, text) {
  const line = $("state");
  line.dataset.state = state;
  line.textContent = text;
}

function fail(error, doing) {
  const text = explain(error, doing);
  setState("error", text);
  say(text, { error: true });
  if (error instanceof ApiError && error.code === -100 && error.status === 401) {
    askSecret("The secret was refused; enter it again.");
  }
}

// ------------------------------------------------------------------ the secret

function askSecret(problem = "") {
  view.needSecret = true;
  $("secret-form").hidden = false;
  const note = $("secret-error");
  note.hidden = !problem;
  note.textContent = problem;
  $("secret").focus();
}

$("secret-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setSecret($("secret").value.trim());
  $("secret").value = "";
  $("secret-form").hidden = true;
  view.needSecret = false;
  refresh();
});

// ------------------------------------------------------------------ the live lists

let refreshing = false;

async function refresh() {
  if (refreshing) {
    return; // the last one is still waiting for the service
  }
  refreshing = true;
  try {
    const health = await api("GET", "/api/health");
    const listed = await api("GET", "/api/devices");
    view.sip = listed.sip;
    view.devices = listed.devices;
    if (view.sip) {
      const [broadcasts, talks, sessions] = await Promise.all([
        api("GET", "/api/broadcast"), api("GET", "/api/talk"), api("GET", "/api/sessions")]);
      view.broadcasts = broadcasts.broadcasts;
      view.talks = talks.talks;
      view.sessions = sessions.sessions;
    } else {
      const [sources, sessions] = await Promise.all([
        api("GET", "/api/sources"), api("GET", "/api/sessions")]);
      view.sources = sources.sources;
      view.sessions = sessions.sessions;
    }
    $("service").textContent = `service ${health.version}, ${health.status}; `
      + (view.sip ? `SIP on, ${view.devices.length} device(s) registered` : "SIP off")
      + `; ${view.sessions.length} talk session(s)`;
    $("secret-form").hidden = true;
    view.needSecret = false;
    render();
    watchCalls();
    document.body.dataset.ready = "true";
  } catch (error) {
    if (error instanceof ApiError && error.code === -100 && error.status === 401) {
      askSecret(secret() ? "That secret was refused (incorrect secret); enter it again." : "");
      $("service").textContent = "the service needs its API secret";
    } else {
      $("service").textContent = explain(error, "listing");
    }
    document.body.dataset.ready = "false";
  } finally {
    refreshing = false;
  }
}

function channelOf(device) {
  const output = device.channels.find((channel) => channel.audio_output);
  return output ? output.id : (device.channels[0] ? device.channels[0].id : "—");
}

function ago(seconds) {
  if (!seconds) {
    return "—";
  }
  const delta = Date.now() / 1000 - seconds;
  return delta >= 0 && delta < 86400 * 365 ? `${Math.round(delta)} s ago` : "—";
}

function deviceState(device) {
  const broadcast = view.broadcasts.find((b) => b.device_id === device.id);
  const talking = view.talks.find((t) => t.device_id === device.id);
  if (talking) {
    return [`in two-way talk (${talking.state})`, "busy"];
  }
  if (broadcast) {
    return [`hearing a broadcast (${broadcast.state})`, "busy"];
  }
  return device.online ? ["online", "online"] : ["offline", "offline"];
}

function render() {
  $("targets-title").textContent = view.sip ? "Devices" : "Sources and sessions";
  $("direct").hidden = view.sip !== false;
  $("devices").hidden = view.sip === false;
  if (view.sip) {
    renderDevices();
  } else {
    renderDirect();
  }
  renderButtons();
}

function renderDevices() {
  const body = $("device-rows");
  const present = new Set(view.devices.map((device) => device.id));
  for (const [id, row] of view.rows) {
    if (!present.has(id)) {
      row.remove();
      view.rows.delete(id);
      view.selected.delete(id);
    }
  }
  const online = view.devices.filter((device) => device.online);
  if (view.selected.size === 0 && online.length === 1 && view.devices.length === 1) {
    view.selected.add(online[0].id); // one device: nothing to choose
  }
  for (const device of view.devices) {
    let row = view.rows.get(device.id);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.deviceId = device.id;
      const pick = document.createElement("input");
      pick.type = "checkbox";
      pick.className = "pick";
      pick.setAttribute("aria-label", `choose device ${device.id}`);
      pick.addEventListener("change", () => {
        if (pick.checked) {
          view.selected.add(device.id);
        } else {
          view.selected.delete(device.id);
        }
        renderButtons();
      });
      const cell = document.createElement("td");
      cell.append(pick);
      row.append(cell);
      for (let i = 0; i < 5; i += 1) {
        row.append(document.createElement("td"));
      }
      body.append(row);
      view.rows.set(device.id, row);
    }
    const [text, kind] = deviceState(device);
    const cells = row.children;
    cells[0].firstChild.checked = view.selected.has(device.id);
    cells[1].textContent = device.id;
    cells[2].textContent = channelOf(device);
    cells[3].textContent = text;
    cells[3].className = `state-${kind}`;
    cells[4].textContent = `${device.address} (${device.transport})`;
    cells[5].textContent = ago(device.last_keepalive || device.registered_at);
  }
  let empty = body.querySelector("tr.empty");
  if (view.devices.length === 0 && !empty) {
    empty = document.createElement("tr");
    empty.className = "empty";
    const cell = document.createElement("td");
    cell.colSpan = 6;
    cell.textContent = "No device registered yet: set the device's SIP server to this "
      + "service's --sip address (and its password).";
    empty.append(cell);
    body.append(empty);
  } else if (view.devices.length && empty) {
    empty.remove();
  }
  $("targets-note").textContent = view.devices.length
    ? "Tick the devices to talk to; two-way talk takes exactly one." : "";
}

function renderDirect() {
  $("targets-note").textContent = "This service runs without SIP (--sip): the console opens "
    + "a talk session, and the device connects to its port.";
  const list = (element, items, words) => {
    element.replaceChildren(...items.map((item) => {
      const entry = document.createElement("li");
      entry.textContent = words(item);
      return entry;
    }));
    if (!items.length) {
      const entry = document.createElement("li");
      entry.className = "quiet";
      entry.textContent = "none";
      element.append(entry);
    }
  };
  list($("sources"), view.sources, (s) => `${s.app}/${s.stream} (${s.kind})`);
  list($("sessions"), view.sessions, (s) => `${s.app}/${s.stream} ssrc ${s.ssrc}: ${s.state}`
    + (s.state === "listening" ? ` on port ${s.local_port}` : ` with ${s.peer || "the device"}`)
    + `, ${s.stats.packets_sent} packets sent`
    + (s.two_way ? `, ${s.stats.packets_received} received` : ""));
}

function renderButtons() {
  const chosen = [...view.selected];
  const direct = view.sip === false;
  const ready = view.sip !== null && !view.needSecret;
  $("ptt").disabled = !ready || talk !== null || (!direct && chosen.length === 0);
  $("talk").disabled = !ready || ptt !== null || (!direct && chosen.length !== 1 && !talk);
  $("stop-all").disabled = ptt === null && talk === null;
}

// ------------------------------------------------------------------ calls the console started

/** Say so when a device of ours stops hearing us (did not connect, hung up). */
function watchCalls() {
  for (const op of [ptt, talk]) {
    if (!op || !op.up || op.ending) {
      continue;
    }
    for (const part of op.parts) {
      if (part.gone) {
        continue;
      }
      const session = view.sessions.find((s) => s.id === part.session_id);
      if (session) {
        part.lastState = session.state;
        continue;
      }
      part.gone = true;
      const text = sessionGone(part.device_id, part.lastState || "listening");
      say(text, { error: part.lastState !== "streaming" });
      if (op.parts.every((p) => p.gone)) {
        setState(part.lastState === "streaming" ? "idle" : "error", text);
        end(op);
      }
    }
  }
}

// ------------------------------------------------------------------ the microphone and meters

function context() {
  if (!audio) {
    audio = new AudioContext();
    meterOut = new Meter($("meter-out"), audio);
    meterIn = new Meter($("meter-in"), audio);
    setInterval(() => {
      meterOut.tick();
      meterIn.tick();
    }, METER_MS);
  }
  if (audio.state === "suspended") {
    audio.resume();
  }
  return audio;
}

async function microphone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error(insecureNote(location));
  }
  return navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    video: false,
  });
}

function unique(prefix) {
  const bytes = new Uint8Array(4);
  crypto.getRandomValues(bytes);
  return `${prefix}-${Date.now().toString(36)}-${[...bytes].map((b) => b.toString(16)
    .padStart(2, "0")).join("")}`;
}

/** Open the microphone and push it to the service as the source console/<stream>. */
async function pushMicrophone(op, prefix) {
  context();
  setState("busy", "Opening the microphone (allow it if the browser asks)…");
  op.mic = await microphone();
  meterOut.attach(op.mic);
  if (op.ending) {
    return;
  }
  setState("busy", "Connecting the microphone to the service…");
  op.stream = unique(prefix);
  op.push = await openPeer("push", APP, op.stream, op.mic.getAudioTracks()[0]);
  await connected(op.push.pc);
}

/** Call `start` again while the service does not know the pushed source yet (its first
 * packets may still be on the way when the WebRTC connection is up). */
async function onceLive(op, start) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await start();
    } catch (error) {
      const early = error instanceof ApiError && error.code === -500 && attempt < 10
        && String(error.message).includes(op.stream);
      if (!early || op.ending) {
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

// ------------------------------------------------------------------ push-to-talk (broadcast)

async function startBroadcast(op) {
  await pushMicrophone(op, "ptt");
  if (op.ending) {
    return;
  }
  if (view.sip === false) {
    const ssrc = $("ssrc").value.trim();
    setState("busy", "Opening a talk port…");
    const reply = await onceLive(op, () => api("POST", "/api/sessions", { json: {
      app: APP, stream: op.stream, ssrc } }));
    op.parts = [{ device_id: null, session_id: reply.session.id, lastState: "listening" }];
    op.up = true;
    setState("talking", `Waiting for the device on port ${reply.local_port} (SSRC ${ssrc}); `
      + "talking as soon as it connects. Release to stop.");
    say(`Talk port ${reply.local_port} opened for SSRC ${ssrc}.`);
    return;
  }
  const devices = op.devices;
  setState("busy", `Calling ${devices.join(", ")}…`);
  const reply = await onceLive(op, () => api("POST", "/api/broadcast", { json: {
    device_ids: devices, app: APP, stream: op.stream } }));
  const ok = reply.results.filter((result) => result.result === "OK");
  for (const result of reply.results.length > 1 ? reply.results : []) {
    const refusal = broadcastRefusal(result); // (one device's refusal is the error itself)
    if (refusal) {
      say(refusal, { error: true });
    }
  }
  op.parts = ok.map((result) => ({ device_id: result.device_id,
                                   session_id: result.session_id, lastState: "listening" }));
  if (!ok.length) {
    throw new Error(reply.results.length === 1 ? broadcastRefusal(reply.results[0])
      : "None of the devices took the broadcast; the log below says why for each.");
  }
  op.up = true;
  const names = ok.map((result) => result.device_id).join(", ");
  setState("talking", `Talking to ${names}. Release to stop.`);
  say(`Broadcasting to ${names}.`);
}

async function stopBroadcast(op) {
  const calls = [];
  for (const part of op.parts || []) {
    if (part.device_id) {
      calls.push(api("POST", "/api/broadcast/stop", { json: { device_id: part.device_id } }));
    } else {
      calls.push(api("DELETE", `/api/sessions/${encodeURIComponent(part.session_id)}`));
    }
  }
  await Promise.allSettled(calls);
}

// ------------------------------------------------------------------ two-way talk

async function startTalk(op) {
  await pushMicrophone(op, "talk");
  if (op.ending) {
    return;
  }
  let app = APP;
  let voice;
  if (view.sip === false) {
    const ssrc = $("ssrc").value.trim();
    voice = unique("voice");
    setState("busy", "Opening a two-way talk port…");
    const reply = await onceLive(op, () => api("POST", "/api/sessions", { json: {
      app: APP, stream: op.stream, ssrc, recv_stream_id: voice } }));
    op.parts = [{ device_id: null, session_id: reply.session.id, lastState: "listening" }];
    setState("busy", `Waiting for the device on port ${reply.local_port} (SSRC ${ssrc})…`);
    say(`Two-way talk port ${reply.local_port} opened for SSRC ${ssrc}.`);
  } else {
    const device = op.devices[0];
    setState("busy", `Calling ${device} for two-way talk…`);
    const reply = await onceLive(op, () => api("POST", "/api/talk", { json: {
      device_id: device, app: APP, stream: op.stream } }));
    op.parts = [{ device_id: device, session_id: reply.session_id, lastState: "listening" }];
    [app, voice] = reply.device_audio.split("/", 2);
  }
  op.up = true;
  if (op.ending) {
    return;
  }
  setState("talking", "Talking; waiting for the device's voice…");
  for (let attempt = 1; !op.ending; attempt += 1) {
    try {
      op.play = await openPeer("play", app, voice);
      break;
    } catch (error) {
      const early = error instanceof ApiError && error.code === -500 && attempt < PLAY_TRIES;
      if (!early) {
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
  if (op.ending) {
    return;
  }
  const heard = await remoteAudio(op.play.pc);
  const playback = $("playback");
  playback.srcObject = heard; // Chrome feeds a remote stream to Web Audio only when played
  playback.play().catch(() => {});
  meterIn.attach(heard);
  const who = op.devices[0] || "the device";
  setState("talking", `In two-way talk with ${who}. Press again to hang up.`);
  say(`Two-way talk with ${who}: you hear the device, it hears you.`);
}

async function stopTalk(op) {
  const part = (op.parts || [])[0];
  if (part && part.device_id) {
    await api("POST", "/api/talk/stop", { json: { device_id: part.device_id } })
      .catch(() => {});
  } else if (part) {
    await api("DELETE", `/api/sessions/${encodeURIComponent(part.session_id)}`)
      .catch(() => {});
  }
}

// ------------------------------------------------------------------ one operation's life

function begin(kind) {
  const op = { kind, devices: [...view.selected], parts: [], up: false, ending: false };
  op.started = (kind === "ptt" ? startBroadcast(op) : startTalk(op)).catch((error) => {
    fail(error, kind === "ptt" ? "broadcast" : "talk"); // even if released meanwhile
    op.failed = true;
    end(op);
  });
  return op;
}

/** End an operation: wait for its start to settle, hang up, free the microphone and peers. */
async function end(op) {
  if (!op || op.ending) {
    return;
  }
  op.ending = true;
  if (op.kind === "ptt") {
    ptt = null;
    $("ptt").setAttribute("aria-pressed", "false");
  } else {
    talk = null;
    $("talk").setAttribute("aria-pressed", "false");
    $("talk").textContent = "Start two-way talk";
  }
  renderButtons();
  await op.started;
  await (op.kind === "ptt" ? stopBroadcast(op) : stopTalk(op));
  for (const peer of [op.push, op.play]) {
    if (peer) {
      await peer.close();
    }
  }
  if (op.mic) {
    op.mic.getTracks().forEach((track) => track.stop());
  }
  if (meterOut && !ptt && !talk) {
    meterOut.detach();
  }
  if (op.play && meterIn) {
    meterIn.detach();
    $("playback").srcObject = null;
  }
  if (!op.failed && !op.up && op.kind === "ptt") {
    setState("idle", "Released before the call was up: hold the button while you talk, or "
      + "tick \"press once to start\".");
  } else if (!op.failed && $("state").dataset.state !== "error") {
    setState("idle", "Idle.");
  }
  if (op.up) {
    say(op.kind === "ptt" ? "Stopped talking." : "Two-way talk ended.");
  }
  renderButtons();
}

function pressTalk() {
  if (ptt || talk || $("ptt").disabled) {
    return;
  }
  ptt = begin("ptt");
  $("ptt").setAttribute("aria-pressed", "true");
  renderButtons();
}

function releaseTalk() {
  if (ptt) {
    end(ptt);
  }
}

const button = $("ptt");
const toggleMode = () => $("toggle-mode").checked;
button.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 || toggleMode()) {
    return;
  }
  button.setPointerCapture(event.pointerId);
  pressTalk();
});
for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) {
  button.addEventListener(name, () => {
    if (!toggleMode()) {
      releaseTalk();
    }
  });
}
button.addEventListener("click", () => {
  if (toggleMode()) {
    if (ptt) {
      releaseTalk();
    } else {
      pressTalk();
    }
  }
});
button.addEventListener("keydown", (event) => {
  if ((event.key === " " || event.key === "Enter") && !toggleMode()) {
    event.preventDefault();
    if (!event.repeat) {
      pressTalk();
    }
  }
});
button.addEventListener("keyup", (event) => {
  if ((event.key === " " || event.key === "Enter") && !toggleMode()) {
    event.preventDefault();
    releaseTalk();
  }
});
$("toggle-mode").addEventListener("change", () => {
  $("ptt").textContent = toggleMode() ? "Press to talk" : "Hold to talk";
  releaseTalk();
});

$("talk").addEventListener("click", () => {
  if (talk) {
    end(talk);
    return;
  }
  if (ptt) {
    return;
  }
  talk = begin("talk");
  $("talk").setAttribute("aria-pressed", "true");
  $("talk").textContent = "Hang up";
  renderButtons();
});

$("stop-all").addEventListener("click", () => {
  end(ptt);
  end(talk);
});

window.addEventListener("pagehide", () => {
  pageLeaving(); // the hang-ups below still reach the service
  end(ptt);
  end(talk);
});
window.addEventListener("blur", () => {
  if (!toggleMode()) {
    releaseTalk(); // a button held while the window lost focus never sees its release
  }
});

// ------------------------------------------------------------------ start

if (!window.isSecureContext) {
  $("insecure").textContent = insecureNote(location);
  $("insecure").hidden = false;
}
refresh();
setInterval(() => {
  if (!view.needSecret) {
    refresh();
  }
}, REFRESH_MS);
