// Network capture: method, URL without query values, status and duration of fetch and XHR calls. Never
// bodies or headers. The SDK's own calls (anything under its endpoint's /v1/ingest/ or /sdk/) are left out.
import { Ring } from "../ring";
import { stripQuery } from "../mask";
import type { NetworkEntry } from "../types";

export type Ignore = (url: string) => boolean;

/** Set in a request's init by the SDK's own chunks (the screenshot library fetching the page's images and
 * fonts to draw them): such a request is the SDK's, not the page's, whatever its URL. */
export const SDK_REQUEST: unique symbol = Symbol.for("relay.sdk-request") as never;

function record(ring: Ring<NetworkEntry>, method: string, url: string, status: number, started: number): void {
  ring.push({
    method: method.toUpperCase(),
    url: stripQuery(url),
    status,
    duration_ms: Math.round(performance.now() - started),
    timestamp: new Date().toISOString(),
  });
}

/** Start capturing fetch and XHR into `ring`; returns the function that restores them. */
export function captureNetwork(ring: Ring<NetworkEntry>, ignore: Ignore, win: Window & typeof globalThis = window):
  () => void {
  const originalFetch = win.fetch;
  if (typeof originalFetch === "function") {
    win.fetch = function (input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
      const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
      const method = init?.method ?? (typeof input === "object" && "method" in input ? input.method : "GET");
      const started = performance.now();
      const call = originalFetch.call(win, input, init);
      if ((init as Record<symbol, unknown> | undefined)?.[SDK_REQUEST] || ignore(new URL(url, win.location.href).href)) {
        return call;
      }
      return call.then((response) => {
        record(ring, method, url, response.status, started);
        return response;
      }, (error: unknown) => {
        record(ring, method, url, 0, started);
        throw error;
      });
    };
  }
  const proto = win.XMLHttpRequest?.prototype;
  const open = proto?.open;
  const send = proto?.send;
  if (proto && open && send) {
    const meta = new WeakMap<XMLHttpRequest, { method: string; url: string }>();
    proto.open = function (this: XMLHttpRequest, method: string, url: string | URL, ...rest: unknown[]) {
      meta.set(this, { method, url: String(url) });
      return (open as (...a: unknown[]) => void).call(this, method, url, ...rest);
    } as typeof proto.open;
    proto.send = function (this: XMLHttpRequest, body?: Document | XMLHttpRequestBodyInit | null) {
      const m = meta.get(this);
      if (m && !ignore(new URL(m.url, win.location.href).href)) {
        const started = performance.now();
        this.addEventListener("loadend", () => record(ring, m.method, m.url, this.status, started), { once: true });
      }
      return send.call(this, body);
    };
  }
  return () => {
    win.fetch = originalFetch;
    if (proto && open && send) {
      proto.open = open;
      proto.send = send;
    }
  };
}
