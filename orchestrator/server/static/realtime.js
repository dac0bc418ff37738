// One /v1/realtime WebSocket: opened on first use, the key as a subprotocol, every server event handed on.
export class Realtime {
  constructor(api, onEvent, onState) {
    Object.assign(this, { api, onEvent, onState });
    this.socket = null;
    this.opening = null;
  }

  get open() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  // Resolves once the socket is open (opening it if need be); rejects with a message a person can act on.
  connect() {
    if (this.open) return Promise.resolve();
    if (this.opening) return this.opening;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/v1/realtime`, this.api.protocols());
    this.onState("connecting", "connecting…");
    this.opening = new Promise((resolve, reject) => {
      socket.onopen = () => {
        this.socket = socket;
        this.opening = null;
        this.onState("open", "connected");
        resolve();
      };
      socket.onclose = (event) => {
        const wasOpen = this.socket === socket;
        this.socket = null;
        this.opening = null;
        const why = event.reason || (wasOpen ? "the server closed the session" : "the server refused the socket");
        this.onState("closed", `disconnected: ${why} (code ${event.code})`);
        if (!wasOpen) reject(new Error(`${why}; check the key and that the stack has a voice LLM`));
      };
      socket.onmessage = (message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch {
          console.warn("realtime: a frame that is not JSON", message.data);
          return;
        }
        this.onEvent(event);
      };
    });
    return this.opening;
  }

  send(event) {
    if (!this.open) throw new Error("the realtime socket is not open");
    this.socket.send(JSON.stringify(event));
  }
}
