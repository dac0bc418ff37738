// What the page shows of the conversation: one bubble per item (user or assistant), and a latency bar per turn.
const STAGES = [["vad_ms", "VAD"], ["asr_ms", "ASR"], ["llm_first_token_ms", "LLM first token"],
  ["first_audio_ms", "first audio"]];
const MAX_TURNS_SHOWN = 6;

export class Transcript {
  constructor(list) {
    this.list = list;
    this.bubbles = new Map(); // item id -> <li>
  }

  bubble(itemId, role) {
    let li = this.bubbles.get(itemId);
    if (!li) {
      this.list.querySelector(".hint")?.remove();
      li = document.createElement("li");
      li.className = `turn ${role}`;
      li.dataset.item = itemId;
      li.dataset.role = role;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = role === "user" ? "you" : "assistant";
      const text = document.createElement("span");
      text.className = "text";
      li.append(who, text);
      this.list.append(li);
      this.bubbles.set(itemId, li);
    }
    return li;
  }

  set(itemId, role, text, pending = false) {
    const li = this.bubble(itemId, role);
    li.querySelector(".text").textContent = text;
    li.classList.toggle("pending", pending);
    li.scrollIntoView({ block: "nearest" });
  }

  append(itemId, role, delta) {
    const li = this.bubble(itemId, role);
    li.classList.remove("pending");
    li.querySelector(".text").textContent += delta;
    li.scrollIntoView({ block: "nearest" });
  }

  // Removes the item's bubble when it holds no text; true when it was empty (or never shown).
  dropIfEmpty(itemId) {
    const li = this.bubbles.get(itemId);
    if (li && li.querySelector(".text").textContent) return false;
    li?.remove();
    this.bubbles.delete(itemId);
    return true;
  }

  // After a cut: the words the server kept stay, the rest (never heard) is shown struck through.
  keepWords(itemId, kept) {
    const text = this.bubbles.get(itemId)?.querySelector(".text");
    if (!text) return;
    const words = text.textContent.trimStart().split(/(\s+)/); // words and the spaces between them
    const keep = 2 * kept.split(/\s+/).filter(Boolean).length;
    const unheard = document.createElement("s");
    unheard.className = "unheard";
    unheard.textContent = words.slice(keep).join("");
    text.replaceChildren(words.slice(0, keep).join(""), unheard);
  }

  note(itemId, text) {
    const li = this.bubbles.get(itemId);
    if (!li) return;
    let note = li.querySelector(".note");
    if (!note) {
      note = document.createElement("span");
      note.className = "note";
      li.append(note);
    }
    note.textContent = text;
  }
}

// A row per turn, newest first: one segment per stage that happened, as wide as it took.
export function showLatency(list, latency, status) {
  const row = document.createElement("li");
  row.className = "latency-row";
  const bar = document.createElement("div");
  bar.className = "latency-bar";
  for (const [key, name] of STAGES) {
    if (latency[key] == null) continue;
    const span = document.createElement("span");
    span.className = "stage";
    span.dataset.stage = key.replace(/_ms$/, "");
    span.style.flexGrow = String(Math.max(latency[key], 1));
    span.textContent = `${name} ${Math.round(latency[key])} ms`;
    span.title = span.textContent;
    bar.append(span);
  }
  const total = document.createElement("span");
  total.className = "total";
  total.textContent = latency.total_ms == null ? status : `${Math.round(latency.total_ms)} ms${
    status === "completed" ? "" : ` (${status})`}`;
  row.append(bar, total);
  list.prepend(row);
  while (list.children.length > MAX_TURNS_SHOWN) list.lastChild.remove();
}
