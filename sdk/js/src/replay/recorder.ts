// The replay chunk (replay.mjs, loaded only when `replay.sampleRate` picks the session): records the page
// with @rrweb/record and ships the events in chunks. Every input is masked, and elements under the project's
// selectors (and `mask`, `.relay-mask`) are blocked before an event exists: recorded as an empty box of their
// size, so neither their text nor their attributes (title, alt, href, src) leave the page, as in screenshots.
// Editable text is masked; the widget and `.relay-block` elements are blocked too. Chunks
// leave every few seconds (gzip by CompressionStream where the browser has it) through the outbox, each
// with its index, so a retried chunk is stored once. The recording continues across navigations in the tab
// (replay id and index live in sessionStorage), pauses while the tab is hidden, ends after a long idle,
// and never holds more than MAX_BYTES of events in memory. On `pagehide` the last events leave with
// `fetch(…, {keepalive: true})`, within the browser's 64 KiB budget for such requests.
import { record } from "@rrweb/record";
import { uuid7 } from "../ids";
import { selectorList } from "../mask";
import type { Relay } from "../relay";

export const FLUSH_MS = 5000;
export const IDLE_MS = 30 * 60 * 1000;
export const MAX_BYTES = 1024 * 1024;
export const KEEPALIVE_BYTES = 60 * 1024;
const STATE = "relay.replay";

interface State { id: string; index: number; key: string }

/** gzip when the browser can; the body and its Content-Encoding. */
export async function compress(json: string): Promise<{ body: Blob | string; encoding?: string }> {
  if (typeof CompressionStream === "undefined") return { body: json };
  const stream = new Blob([json]).stream().pipeThrough(new CompressionStream("gzip"));
  return { body: await new Response(stream).blob(), encoding: "gzip" };
}

/** The size of a body on the wire: the keepalive budget counts bytes, and a character may take up to four. */
export function utf8Bytes(text: string): number {
  return new TextEncoder().encode(text).length;
}

export class Recorder {
  replayId: string;
  private index: number;
  private events: unknown[] = [];
  private bytes = 0;
  private stopRecording: (() => void) | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private lastActivity = Date.now();
  private attach: string | undefined;
  private ended = false;
  private listeners: [EventTarget, string, EventListener][] = [];

  constructor(private relay: Relay, private masked: string[]) {
    const key = relay.options.key;
    let state: State | null = null;
    try {
      state = JSON.parse(sessionStorage.getItem(STATE) ?? "null") as State | null;
    } catch {
      state = null;
    }
    if (!state || state.key !== key) state = { id: uuid7(), index: 0, key };
    this.replayId = state.id;
    this.index = state.index;
    this.save();
  }

  private save(): void {
    try {
      sessionStorage.setItem(STATE, JSON.stringify({ id: this.replayId, index: this.index,
        key: this.relay.options.key }));
    } catch {
      // no storage: the replay ends with the page
    }
  }

  start(): void {
    const on = (target: EventTarget, type: string, fn: EventListener) => {
      target.addEventListener(type, fn, { capture: true, passive: true });
      this.listeners.push([target, type, fn]);
    };
    on(document, "visibilitychange", () => (document.hidden ? this.pause() : this.resume()));
    on(window, "pagehide", () => this.unload());
    for (const type of ["pointerdown", "keydown", "scroll", "input"]) on(window, type, () => this.active());
    this.resume();
  }

  private active(): void {
    this.lastActivity = Date.now();
  }

  private resume(): void {
    if (this.ended || this.stopRecording) return;
    // Form fields are masked by maskAllInputs; editable text keeps its layout with its words masked.
    const mask = selectorList(this.masked.filter((s) => !/^(input|textarea|select)$/.test(s)));
    const block = selectorList(["relay-widget", ".relay-block", "[data-relay-block]",
      ...this.masked.filter((s) => !/^(input|textarea|select|\[contenteditable\])$/.test(s))]);
    this.stopRecording = record({
      emit: (event) => this.add(event),
      maskAllInputs: true,
      maskInputOptions: { password: true },
      maskTextSelector: mask || undefined,
      blockSelector: block,
      recordCanvas: false,
      collectFonts: false,
      inlineImages: false,
      sampling: { mousemove: 50, scroll: 150, input: "last" },
    });
    this.timer = setInterval(() => {
      if (Date.now() - this.lastActivity > IDLE_MS) void this.stop(true);
      else void this.flush();
    }, FLUSH_MS);
  }

  private pause(): void {
    clearInterval(this.timer);
    this.stopRecording?.();
    this.stopRecording = undefined;
    void this.flush();
  }

  private add(event: unknown): void {
    this.events.push(event);
    this.bytes += JSON.stringify(event).length;
    if (this.bytes > MAX_BYTES) void this.flush();
  }

  /** Take the events so far as the next chunk: index reserved at once, so concurrent flushes never collide. */
  private take(): { path: string; json: string } | null {
    if (this.events.length === 0) return null;
    const json = JSON.stringify(this.events);
    this.events = [];
    this.bytes = 0;
    const index = this.index++;
    this.save();
    let path = `/v1/ingest/replays/${this.replayId}/chunks/${index}?session_id=${this.relay.sessionId}`;
    if (this.attach) path += `&interaction_id=${this.attach}`;
    this.attach = undefined;
    return { path, json };
  }

  /** Send what was recorded; `interactionId` links the replay to a report (with this chunk or the next). */
  async flush(interactionId?: string): Promise<void> {
    if (interactionId) this.attach = interactionId;
    const chunk = this.take();
    if (!chunk) return;
    const { body, encoding } = await compress(chunk.json);
    await this.relay.enqueue({ method: "POST", path: chunk.path, body, contentType: "application/json",
      contentEncoding: encoding });
  }

  /** The page goes away: send the last events now, with keepalive when they fit its budget. */
  private unload(): void {
    const chunk = this.take();
    if (!chunk) return;
    const job = { method: "POST" as const, path: chunk.path, body: chunk.json, contentType: "application/json" };
    if (utf8Bytes(chunk.json) <= KEEPALIVE_BYTES) {
      void this.relay.client.send({ ...job, id: "", seq: 0, key: "", attempts: 0, notBefore: 0 }, true);
    }
    // Also written down: should the keepalive not make it, the next page sends it (the index makes it once).
    void this.relay.enqueue(job);
  }

  /** Stop recording; `finish` ends the replay (it is then processed), else the next page may go on with it. */
  async stop(finish: boolean): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.timer);
    this.stopRecording?.();
    this.stopRecording = undefined;
    for (const [target, type, fn] of this.listeners.splice(0)) target.removeEventListener(type, fn, true);
    await this.flush();
    if (finish) {
      try {
        sessionStorage.removeItem(STATE);
      } catch {
        // no storage: nothing was kept
      }
      await this.relay.enqueue({ method: "POST", path: `/v1/ingest/replays/${this.replayId}/finish` });
    }
  }
}
