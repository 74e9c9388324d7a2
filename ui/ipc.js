// The page's two IPC primitives, on Tauri's own bridge (window.__TAURI_INTERNALS__,
// which Tauri injects into every page): what @tauri-apps/api's core module does
// (Channel as in @tauri-apps/api 2.x), without a bundler and without
// `withGlobalTauri` (no global `window.__TAURI__` with every API module).
// Imported by ui/src/api.rs (wasm-bindgen copies it into ui/dist/snippets).

const SERIALIZE_TO_IPC_FN = "__TAURI_TO_IPC_KEY__";

export function invoke(cmd, args) {
  return window.__TAURI_INTERNALS__.invoke(cmd, args);
}

// A channel the backend pushes messages into, delivered in order (each
// message carries its index; an `end` marker unregisters the callback).
export class Channel {
  #onmessage = () => {};
  #next = 0;
  #pending = {};
  #end = undefined;

  constructor(onmessage) {
    if (onmessage) this.#onmessage = onmessage;
    this.id = window.__TAURI_INTERNALS__.transformCallback((raw) => {
      const index = raw.index;
      if ("end" in raw) {
        if (index == this.#next) this.cleanupCallback();
        else this.#end = index;
        return;
      }
      if (index != this.#next) {
        this.#pending[index] = raw.message;
        return;
      }
      this.#deliver(raw.message);
      this.#next += 1;
      while (this.#next in this.#pending) {
        const m = this.#pending[this.#next];
        delete this.#pending[this.#next];
        this.#deliver(m);
        this.#next += 1;
      }
      if (this.#next === this.#end) this.cleanupCallback();
    });
  }

  #deliver(message) {
    try {
      this.#onmessage(message);
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }

  cleanupCallback() {
    window.__TAURI_INTERNALS__.unregisterCallback(this.id);
  }

  set onmessage(handler) {
    this.#onmessage = handler;
  }

  get onmessage() {
    return this.#onmessage;
  }

  [SERIALIZE_TO_IPC_FN]() {
    return `__CHANNEL__:${this.id}`;
  }

  toJSON() {
    return this[SERIALIZE_TO_IPC_FN]();
  }
}
