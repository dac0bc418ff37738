// The server's HTTP API with the key as a Bearer header; the key is asked for once and kept in this browser.
const STORAGE = "voice-orchestrator.api-key";

export class KeyRefused extends Error {}

export class Api {
  constructor() {
    this.key = localStorage.getItem(STORAGE) || "";
  }

  setKey(key) {
    this.key = key;
    if (key) localStorage.setItem(STORAGE, key);
    else localStorage.removeItem(STORAGE);
  }

  headers() {
    return this.key ? { Authorization: `Bearer ${this.key}` } : {};
  }

  // The subprotocols a browser's WebSocket sends instead of headers it cannot set.
  protocols() {
    return this.key ? ["realtime", `openai-insecure-api-key.${this.key}`] : ["realtime"];
  }

  async get(path) {
    const response = await fetch(path, { headers: this.headers() });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) throw new KeyRefused(body.error?.message || "the server wants an API key");
    if (!response.ok) throw new Error(body.error?.message || `${path} answered ${response.status}`);
    return body;
  }
}
