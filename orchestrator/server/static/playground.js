// The playground: asks for the key when the server wants one, talks over /v1/realtime (microphone or typed), plays
// the answer, and shows the card. `window.playground.state` is what the page counted (the browser tests read it).
import { Api, KeyRefused } from "./api.js";
import { Microphone, Player, RATE, toBase64 } from "./audio.js";
import { Card } from "./card.js";
import { showLatency, Transcript } from "./conversation.js";
import { Realtime } from "./realtime.js";

const CARD_REFRESH_MS = 2000;
const LOG_LIMIT = 200;
const $ = (id) => document.getElementById(id);

const state = {
  audioChunksReceived: 0, audioSecondsReceived: 0, audioChunksPlayed: 0, piecesSent: 0, turns: 0,
  lastLatency: null, events: {}, unknownTypes: [], errors: [], session: null, truncations: [],
};
const api = new Api();
const transcript = new Transcript($("transcript"));
const card = new Card(api, (error) => (error instanceof KeyRefused ? askForKey(error.message) : notice(error.message)));
const realtime = new Realtime(api, onEvent, (kind, text) => {
  $("status").dataset.state = kind;
  $("status").textContent = text;
  if (kind === "closed") stopMicrophone(); // a microphone sending nowhere would mislead
});
let context = null, player = null, microphone = null, refresher = null;
let responding = false;       // a response is in progress on the server
let pendingCut = null;        // what the user talked over, to truncate once the server has the whole item
const finishedItems = new Set();
window.playground = { state };

function notice(message) {
  const box = $("notice");
  box.textContent = message;
  box.hidden = !message;
}

// refused: the server's answer to the key we sent (none sent: just the prompt).
function askForKey(refused) {
  if (refused) api.setKey("");
  $("main").hidden = true;
  $("key-form").hidden = false;
  $("key-error").hidden = !refused;
  $("key-error").textContent = refused ? `Wrong API key: the server refused it (${refused}). Check it and try again.`
    : "";
  $("key-input").value = "";
  $("key-input").focus();
}

// Audio needs a user's gesture to start in every browser: made on the first click that needs it.
async function audio() {
  if (!context) {
    context = new AudioContext();
    player = new Player(context, () => (state.audioChunksPlayed = player.played));
  }
  if (context.state !== "running") await context.resume();
  return context;
}

// The session, opened on first use with the chosen settings sent first, so even the first response has them.
async function session() {
  const fresh = !realtime.open;
  await realtime.connect();
  if (fresh) applySettings();
  return realtime;
}

function logEvent(event) {
  const li = document.createElement("li");
  li.textContent = event.type + (event.type === "error" ? `: ${event.error?.message}` : "");
  $("event-log").prepend(li);
  while ($("event-log").children.length > LOG_LIMIT) $("event-log").lastChild.remove();
  $("event-count").textContent = String(Object.values(state.events).reduce((a, b) => a + b, 0));
}

// The user talked (or typed) over the answer: silence it, and cut its text at what was heard.
function bargeIn() {
  const cut = player?.stop();
  if (!cut) return;
  pendingCut = cut;
  if (finishedItems.has(cut.itemId)) sendCut();
}

function sendCut() {
  const { itemId, audioEndMs } = pendingCut;
  pendingCut = null;
  realtime.send({ type: "conversation.item.truncate", item_id: itemId, content_index: 0, audio_end_ms: audioEndMs });
  state.truncations.push({ itemId, audioEndMs });
}

function itemText(item) {
  return (item.content || []).map((part) => part.text ?? part.transcript ?? "").join("");
}

const handlers = {
  "session.created": (e) => (state.session = e.session),
  "session.updated": (e) => (state.session = e.session),
  "input_audio_buffer.speech_started": () => {
    $("status").textContent = "hearing you…";
    bargeIn();
  },
  "input_audio_buffer.speech_stopped": () => ($("status").textContent = "thinking…"),
  "input_audio_buffer.committed": (e) => transcript.set(e.item_id, "user", "", true),
  "conversation.item.added": (e) => {
    const role = e.item.role === "user" ? "user" : "assistant";
    if (e.item.type === "message" && !transcript.bubbles.has(e.item.id)) {
      transcript.set(e.item.id, role, itemText(e.item), !itemText(e.item));
    }
  },
  "conversation.item.done": (e) => finishedItems.add(e.item.id),
  "conversation.item.input_audio_transcription.delta": (e) => transcript.append(e.item_id, "user", e.delta),
  "conversation.item.input_audio_transcription.completed": (e) => transcript.set(e.item_id, "user", e.transcript),
  "conversation.item.input_audio_transcription.failed": (e) =>
    transcript.set(e.item_id, "user", `(not transcribed: ${e.error?.message || "unknown error"})`),
  "conversation.item.truncated": (e) => {
    transcript.note(e.item_id, `interrupted after ${(e.audio_end_ms / 1000).toFixed(1)} s`);
    realtime.send({ type: "conversation.item.retrieve", item_id: e.item_id }); // what the model will remember
  },
  "conversation.item.retrieved": (e) => e.item.role === "assistant" && transcript.keepWords(e.item.id, itemText(e.item)),
  "response.created": () => (responding = true),
  "response.output_item.added": (e) => e.item.type === "message" && transcript.set(e.item.id, "assistant", "", true),
  "response.output_item.done": (e) => e.item.type === "function_call" &&
    transcript.set(e.item.id, "assistant", `calls ${e.item.name}(${e.item.arguments})`),
  "response.output_audio_transcript.delta": (e) => transcript.append(e.item_id, "assistant", e.delta),
  "response.output_text.delta": (e) => transcript.append(e.item_id, "assistant", e.delta),
  "response.output_audio_transcript.done": (e) => transcript.set(e.item_id, "assistant", e.transcript),
  "response.output_text.done": (e) => transcript.set(e.item_id, "assistant", e.text),
  "response.output_audio.delta": (e) => {
    state.audioChunksReceived += 1;
    const rate = state.session?.audio?.output?.format?.rate || RATE;
    state.audioSecondsReceived += player.enqueue(e.item_id, e.delta, rate); // the socket opens after audio()
  },
  "response.done": (e) => {
    responding = false;
    const { status, status_details: details, output = [] } = e.response;
    for (const item of output) finishedItems.add(item.id);
    if (pendingCut && finishedItems.has(pendingCut.itemId)) sendCut();
    if (status === "failed") notice(`The answer failed: ${details?.error?.message || "see the server log"}`);
    // An answer cancelled before it said anything (the user went on talking) leaves no trace.
    const said = output.filter((item) => !transcript.dropIfEmpty(item.id));
    if (status === "cancelled") said.forEach((item) => transcript.note(item.id, "interrupted"));
    if (!said.length && status === "cancelled") return;
    state.turns += 1;
    state.lastLatency = e.latency || null;
    if (e.latency) showLatency($("latency"), e.latency, status);
    $("status").textContent = microphone ? "listening" : "connected";
  },
  error: (e) => {
    state.errors.push(e.error);
    notice(`Server: ${e.error?.message || "an error"}`);
  },
};

function onEvent(event) {
  state.events[event.type] = (state.events[event.type] || 0) + 1;
  logEvent(event);
  const handle = handlers[event.type];
  if (handle) handle(event);
  else if (!state.unknownTypes.includes(event.type)) state.unknownTypes.push(event.type); // newer servers send more
}

function stopMicrophone() {
  if (!microphone) return;
  microphone.close();
  microphone = null;
  $("mic").textContent = "Start talking";
  $("mic").setAttribute("aria-pressed", "false");
  if (realtime.open) realtime.send({ type: "input_audio_buffer.clear" });
}

async function toggleMicrophone() {
  const button = $("mic");
  if (microphone) return stopMicrophone();
  button.disabled = true;
  try {
    const [audioContext] = await Promise.all([audio(), session()]);
    microphone = await Microphone.open(audioContext, (pcm) => {
      if (!realtime.open) return;
      realtime.send({ type: "input_audio_buffer.append", audio: toBase64(pcm) });
      state.piecesSent += 1;
    });
    button.textContent = "Stop microphone";
    button.setAttribute("aria-pressed", "true");
    $("status").textContent = "listening";
    notice("");
  } catch (error) {
    notice(error.name === "NotAllowedError" ? "The browser was not allowed to use the microphone." : error.message);
  } finally {
    button.disabled = false;
  }
}

async function sendTyped(event) {
  event.preventDefault();
  const text = $("type-input").value.trim();
  if (!text) return;
  try {
    await Promise.all([audio(), session()]);
    bargeIn();
    if (responding) realtime.send({ type: "response.cancel" });
    realtime.send({ type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
    realtime.send({ type: "response.create" });
    $("type-input").value = "";
    notice("");
  } catch (error) {
    notice(error.message);
  }
}

async function loadVoices() {
  const select = $("voice");
  const { data } = await api.get("/v1/audio/voices");
  const ids = [...new Set(data.map((v) => v.id))];
  select.replaceChildren(...ids.map((id) => new Option(id, id)));
  select.disabled = !ids.length;
  if (!ids.length) select.append(new Option("no TTS model", ""));
}

// The voice and the settings the person chose, sent whenever one changes and when a session starts.
function applySettings() {
  if (!realtime.open) return;
  const settings = { type: "realtime", instructions: $("instructions").value.trim() || null, audio: {} };
  if ($("voice").value) settings.audio.output = { voice: $("voice").value };
  // A streaming transcription model: the server sends the words while the person speaks (deltas, then the final).
  settings.audio.input = { transcription: { model: "gpt-4o-transcribe" } };
  if ($("temperature").value !== "") settings.temperature = Number($("temperature").value);
  realtime.send({ type: "session.update", session: settings });
}

// Check the key (if the server wants one) with a cheap request, then show the page.
async function start() {
  try {
    await api.get("/v1/models");
  } catch (error) {
    if (error instanceof KeyRefused) return askForKey(api.key ? error.message : null);
    return notice(`The server did not answer: ${error.message}`);
  }
  $("key-form").hidden = true;
  $("main").hidden = false;
  $("change-key").hidden = !api.key;
  await Promise.all([loadVoices().catch((error) => notice(error.message)), card.refresh()]);
  refresher ??= setInterval(() => card.refresh(), CARD_REFRESH_MS);
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  api.setKey($("key-input").value.trim());
  start();
});
$("change-key").addEventListener("click", () => {
  api.setKey("");
  askForKey(null);
});
$("mic").addEventListener("click", toggleMicrophone);
$("type-form").addEventListener("submit", sendTyped);
for (const id of ["voice", "instructions", "temperature"]) $(id).addEventListener("change", applySettings);
start();
