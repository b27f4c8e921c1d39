import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

const recording = vi.hoisted(() => ({ emit: undefined as ((e: unknown) => void) | undefined, options: {} as Record<string, unknown>,
  starts: 0, stops: 0 }));
vi.mock("@rrweb/record", () => ({
  record: (options: { emit: (e: unknown) => void }) => {
    recording.emit = options.emit;
    recording.options = options;
    recording.starts += 1;
    return () => { recording.stops += 1; };
  },
}));

import { FLUSH_MS, IDLE_MS, KEEPALIVE_BYTES, MAX_BYTES, Recorder, utf8Bytes } from "../src/replay/recorder";

const made: Recorder[] = [];

function fakeRelay() {
  const queued: { path: string; body: unknown; contentEncoding?: string }[] = [];
  const beacons: { path: string; keepalive: boolean }[] = [];
  return {
    queued, beacons,
    relay: {
      options: { key: "rk_us_abcdef_x" }, sessionId: "s-1",
      enqueue: async (job: { path: string; body: unknown; contentEncoding?: string }) => { queued.push(job); return { kind: "sent" }; },
      client: { send: async (job: { path: string }, keepalive: boolean) => { beacons.push({ path: job.path, keepalive }); return { kind: "sent" }; } },
    },
  };
}

const flushed = () => new Promise((r) => setTimeout(r, 20));

describe("Recorder", () => {
  beforeEach(() => {
    sessionStorage.clear();
    recording.starts = recording.stops = 0;
  });
  afterEach(async () => {
    for (const r of made.splice(0)) await r.stop(false);
  });
  const track = (r: Recorder) => (made.push(r), r);

  it("masks every input and editable text, and blocks the widget and the project's selectors", () => {
    const { relay } = fakeRelay();
    track(new Recorder(relay as never, ["input", "[contenteditable]", ".account", "::bad(("])).start();
    expect(recording.options).toMatchObject({ maskAllInputs: true, maskTextSelector: "[contenteditable], .account" });
    // The project's selectors are blocked (no text, no attributes); editable text and inputs are not.
    const blocked = String(recording.options.blockSelector).split(", ");
    expect(blocked).toEqual(["relay-widget", ".relay-block", "[data-relay-block]", ".account"]);
  });

  it("numbers chunks, keeps the index across pages, and links a report", async () => {
    const { relay, queued } = fakeRelay();
    const first = track(new Recorder(relay as never, []));
    first.start();
    recording.emit?.({ type: 4, data: { href: "https://a/" } });
    await first.flush("0190-interaction");
    recording.emit?.({ type: 3, data: {} });
    await first.flush();
    await flushed();
    expect(queued.map((j) => j.path)).toEqual([
      `/v1/ingest/replays/${first.replayId}/chunks/0?session_id=s-1&interaction_id=0190-interaction`,
      `/v1/ingest/replays/${first.replayId}/chunks/1?session_id=s-1`,
    ]);
    const next = track(new Recorder(relay as never, [])); // the next page of the tab
    expect(next.replayId).toBe(first.replayId);
    next.start();
    recording.emit?.({ type: 4, data: { href: "https://a/2" } });
    await next.flush();
    await flushed();
    expect(queued[2]?.path).toContain("/chunks/2?");
  });

  it("pauses while the tab is hidden and records again when it is back", async () => {
    const { relay, queued } = fakeRelay();
    track(new Recorder(relay as never, [])).start();
    recording.emit?.({ type: 2, data: {} });
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    document.dispatchEvent(new Event("visibilitychange"));
    await flushed();
    expect(recording.stops).toBe(1);
    expect(queued).toHaveLength(1);
    Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
    document.dispatchEvent(new Event("visibilitychange"));
    expect(recording.starts).toBe(2);
  });

  it("never holds more than MAX_BYTES of events", async () => {
    const { relay, queued } = fakeRelay();
    track(new Recorder(relay as never, [])).start();
    const big = "x".repeat(MAX_BYTES / 4);
    for (let i = 0; i < 5; i++) recording.emit?.({ type: 3, data: { big } });
    await vi.waitFor(() => expect(queued.length).toBeGreaterThanOrEqual(1));
  });

  it("sends the last events with keepalive on pagehide when they fit, and writes them down either way", async () => {
    const { relay, queued, beacons } = fakeRelay();
    track(new Recorder(relay as never, [])).start();
    recording.emit?.({ type: 3, data: { small: true } });
    window.dispatchEvent(new Event("pagehide"));
    recording.emit?.({ type: 3, data: { big: "y".repeat(KEEPALIVE_BYTES) } });
    window.dispatchEvent(new Event("pagehide"));
    await flushed();
    expect(beacons).toEqual([{ path: expect.stringContaining("/chunks/0?"), keepalive: true }]);
    expect(queued.map((j) => j.path.split("?")[0]?.split("/").pop())).toEqual(["0", "1"]);
  });

  it("counts the keepalive budget in bytes, not characters", async () => {
    const { relay, beacons, queued } = fakeRelay();
    track(new Recorder(relay as never, [])).start();
    // Fewer characters than the budget, more bytes than it: written down for the next page, not sent now.
    recording.emit?.({ type: 3, data: { text: "é".repeat(KEEPALIVE_BYTES * 0.6) } });
    window.dispatchEvent(new Event("pagehide"));
    await flushed();
    expect(utf8Bytes("é")).toBe(2);
    expect(beacons).toEqual([]);
    expect(queued).toHaveLength(1);
  });

  it("ends the recording after a long idle: last chunk, then finish", async () => {
    vi.useFakeTimers();
    vi.stubGlobal("CompressionStream", undefined); // its streams run outside the fake clock
    try {
      const { relay, queued } = fakeRelay();
      const recorder = track(new Recorder(relay as never, []));
      recorder.start();
      recording.emit?.({ type: 2, data: {} });
      await vi.advanceTimersByTimeAsync(FLUSH_MS);
      expect(queued.map((j) => j.path.split("?")[0]?.split("/").pop())).toEqual(["0"]);
      window.dispatchEvent(new Event("pointerdown")); // activity keeps it going
      await vi.advanceTimersByTimeAsync(IDLE_MS - FLUSH_MS);
      expect(recording.stops).toBe(0);
      recording.emit?.({ type: 3, data: {} });
      await vi.advanceTimersByTimeAsync(2 * FLUSH_MS + FLUSH_MS);
      expect(recording.stops).toBe(1);
      expect(queued.map((j) => j.path.split("?")[0]?.split("/").pop())).toEqual(["0", "1", "finish"]);
    } finally {
      vi.useRealTimers();
      vi.unstubAllGlobals();
    }
  });

  it("ends the replay: last chunk, then finish, and the next page starts a new one", async () => {
    const { relay, queued } = fakeRelay();
    const recorder = new Recorder(relay as never, []);
    recorder.start();
    recording.emit?.({ type: 3, data: {} });
    await recorder.stop(true);
    expect(queued.map((j) => j.path.split("?")[0])).toEqual([
      `/v1/ingest/replays/${recorder.replayId}/chunks/0`, `/v1/ingest/replays/${recorder.replayId}/finish`]);
    expect(new Recorder(relay as never, []).replayId).not.toBe(recorder.replayId);
  });
});
