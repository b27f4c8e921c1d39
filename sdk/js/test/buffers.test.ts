import { describe, expect, it } from "vitest";
import { captureConsole } from "../src/capture/console";
import { captureNetwork, SDK_REQUEST } from "../src/capture/network";
import { captureErrors, errorEntry } from "../src/capture/errors";
import { Ring } from "../src/ring";
import type { ConsoleEntry, ErrorEntry, NetworkEntry } from "../src/types";

describe("Ring", () => {
  it("keeps the last N, oldest first", () => {
    const ring = new Ring<number>(3);
    for (let i = 1; i <= 5; i++) ring.push(i);
    expect(ring.toArray()).toEqual([3, 4, 5]);
    expect(ring.size).toBe(3);
    ring.clear();
    expect(ring.toArray()).toEqual([]);
  });
  it("refuses a zero capacity", () => expect(() => new Ring(0)).toThrow(RangeError));
});

describe("console capture", () => {
  it("records level and capped message, keeps the console working, restores it", () => {
    const seen: unknown[][] = [];
    const target = { log: (...a: unknown[]) => seen.push(a), info() {}, warn() {}, error() {}, debug() {} } as unknown as Console;
    const ring = new Ring<ConsoleEntry>(2);
    const stop = captureConsole(ring, target);
    target.log("a", { n: 1 });
    target.warn("x".repeat(5000));
    target.error("third");
    expect(seen).toEqual([["a", { n: 1 }]]);
    const [warn, error] = ring.toArray();
    expect(warn?.level).toBe("warn");
    expect(warn?.message.length).toBeLessThanOrEqual(2001);
    expect(error).toMatchObject({ level: "error", message: "third" });
    stop();
    target.log("after");
    expect(ring.size).toBe(2);
  });
  it("survives circular arguments", () => {
    const ring = new Ring<ConsoleEntry>(5);
    const target = { log() {}, info() {}, warn() {}, error() {}, debug() {} } as unknown as Console;
    captureConsole(ring, target);
    const loop: Record<string, unknown> = {};
    loop.self = loop;
    target.log(loop);
    expect(ring.toArray()[0]?.message).toContain("[circular]");
  });
});

describe("network capture", () => {
  it("records fetch without query values, and skips the SDK's own calls and marked requests", async () => {
    const ring = new Ring<NetworkEntry>(10);
    const win = window as Window & typeof globalThis;
    const original = win.fetch;
    win.fetch = (async () => new Response("", { status: 503 })) as typeof fetch;
    const stop = captureNetwork(ring, (url) => url.startsWith("https://relay.example/v1/ingest/"), win);
    await win.fetch("https://api.example/cart?token=secret&id=3#frag", { method: "post" });
    await win.fetch("https://relay.example/v1/ingest/interactions", { method: "POST" });
    await win.fetch("https://api.example/logo.png", { [SDK_REQUEST]: true } as RequestInit); // the screenshot's
    stop();
    win.fetch = original;
    expect(ring.toArray()).toEqual([expect.objectContaining({ method: "POST", url: "https://api.example/cart?token=&id=",
      status: 503 })]);
  });
});

describe("error capture", () => {
  it("keeps message and stack", () => {
    const entry: ErrorEntry = errorEntry("error", new TypeError("boom"), "https://x.example/app.js?v=1:3:4");
    expect(entry.message).toBe("TypeError: boom");
    expect(entry.stack).toContain("boom");
    expect(entry.source).toBe("https://x.example/app.js?v=");
  });
  it("listens for unhandled rejections", () => {
    const ring = new Ring<ErrorEntry>(5);
    const stop = captureErrors(ring, window);
    const event = new Event("unhandledrejection") as Event & { reason: unknown };
    event.reason = new Error("nope");
    window.dispatchEvent(event);
    stop();
    expect(ring.toArray()[0]).toMatchObject({ type: "unhandledrejection", message: "Error: nope" });
  });
});
