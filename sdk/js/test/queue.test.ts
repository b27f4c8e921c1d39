import { describe, expect, it } from "vitest";
import { backoff, BASE_MS, MAX_MS, retryAfter } from "../src/transport/backoff";
import { Queue, type Outcome } from "../src/transport/queue";
import { MemoryStore, type Job } from "../src/transport/store";
import { uuid7 } from "../src/ids";

describe("backoff", () => {
  it("grows exponentially, is capped, and is jittered within [step/2, step]", () => {
    expect(backoff(1, () => 0)).toBe(BASE_MS / 2);
    expect(backoff(1, () => 1)).toBe(BASE_MS);
    expect(backoff(3, () => 1)).toBe(4 * BASE_MS);
    expect(backoff(40, () => 1)).toBe(MAX_MS);
    const spread = new Set(Array.from({ length: 20 }, () => backoff(4)));
    expect(spread.size).toBeGreaterThan(1);
  });
  it("reads Retry-After as seconds or a date", () => {
    expect(retryAfter("3")).toBe(3000);
    expect(retryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6000);
    expect(retryAfter(null)).toBeNull();
    expect(retryAfter("soon")).toBeNull();
  });
});

describe("uuid7", () => {
  it("is a time-ordered v7 UUID", () => {
    const a = uuid7(1_000), b = uuid7(2_000);
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(a < b).toBe(true);
  });
});

function harness(outcomes: Outcome[]) {
  const store = new MemoryStore();
  const sent: Job[] = [];
  let clock = 1_000_000;
  const queue = new Queue(store, "rk_us_abcdef_x", async (job) => {
    sent.push({ ...job });
    return outcomes.shift() ?? { kind: "sent", body: null };
  }, () => 0.5, () => clock);
  return { store, sent, queue, tick: (ms: number) => (clock += ms) };
}

describe("queue", () => {
  it("sends in order and forgets what was sent", async () => {
    const { store, sent, queue } = harness([]);
    const first = await queue.enqueue({ method: "POST", path: "/a", body: "1" });
    await queue.enqueue({ method: "POST", path: "/b", body: "2" });
    await queue.drain();
    expect(first.kind).toBe("sent");
    expect(sent.map((j) => j.path)).toEqual(["/a", "/b"]);
    expect(await store.all()).toEqual([]);
  });

  it("keeps a failed send, waits for Retry-After, and sends it once when due", async () => {
    const { store, sent, queue, tick } = harness([{ kind: "retry", afterMs: 2000 }]);
    const first = await queue.enqueue({ method: "POST", path: "/a" });
    expect(first.kind).toBe("queued");
    const [kept] = await store.all();
    expect(kept?.attempts).toBe(1);
    expect(kept?.retryAfter).toBe(true);
    expect(kept?.notBefore).toBe(1_000_000 + 2000);
    await queue.wake(); // online again does not cut the server's wait short
    await queue.drain();
    expect(sent).toHaveLength(1);
    tick(2000);
    queue.stop(); queue.stopped = false;
    await queue.drain();
    expect(sent).toHaveLength(2);
    expect(await store.all()).toEqual([]);
  });

  it("backs off network failures and retries at once when the browser is back online", async () => {
    const { store, sent, queue } = harness([{ kind: "retry", afterMs: null }, { kind: "retry", afterMs: null }]);
    await queue.enqueue({ method: "POST", path: "/a" });
    let [kept] = await store.all();
    expect(kept?.notBefore).toBe(1_000_000 + backoff(1, () => 0.5));
    await queue.wake();
    await new Promise((r) => setTimeout(r, 10));
    [kept] = await store.all();
    expect(kept?.attempts).toBe(2);
    expect(kept?.notBefore).toBe(1_000_000 + backoff(2, () => 0.5));
    expect(sent).toHaveLength(2);
    queue.stop();
  });

  it("drops a refused request and reports why", async () => {
    const { store, queue } = harness([{ kind: "refused", status: 422, detail: "bad type" }]);
    const first = await queue.enqueue({ method: "POST", path: "/a" });
    expect(first).toEqual({ kind: "refused", detail: "bad type" });
    expect(await store.all()).toEqual([]);
  });

  it("after a reload, a new queue sends what the last page left, for its own key only", async () => {
    const store = new MemoryStore();
    await store.put({ id: "1", seq: 1, key: "rk_us_abcdef_x", method: "POST", path: "/left", attempts: 1, notBefore: 0 });
    await store.put({ id: "2", seq: 2, key: "rk_eu_other0_y", method: "POST", path: "/other", attempts: 0, notBefore: 0 });
    const sent: string[] = [];
    const queue = new Queue(store, "rk_us_abcdef_x", async (job) => (sent.push(job.path), { kind: "sent", body: null }));
    await queue.drain();
    expect(sent).toEqual(["/left"]);
    expect((await store.all()).map((j) => j.id)).toEqual(["2"]);
  });
});
