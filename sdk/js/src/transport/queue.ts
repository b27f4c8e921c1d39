// The outbox: every request the SDK must not lose is written down first, sent in order, retried with backoff
// (or after Retry-After) while the network or Relay fails, and forgotten once Relay answered. Requests carry
// client ids (interaction, media, chunk index, session), so sending one again never stores it twice.
import { backoff } from "./backoff";
import type { Job, Store } from "./store";

export type Outcome =
  | { kind: "sent"; body: unknown }
  | { kind: "retry"; afterMs: number | null }
  | { kind: "refused"; status: number; detail: string };

export type Sender = (job: Job) => Promise<Outcome>;
export type FirstTry = { kind: "sent"; body: unknown } | { kind: "queued" } | { kind: "refused"; detail: string };

let counter = 0;

export function jobId(): string {
  return `${Date.now().toString(36)}-${(counter++).toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

export class Queue {
  private running = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private waiting = new Map<string, (result: FirstTry) => void>();
  private seq = Date.now() * 1000;
  stopped = false;

  constructor(private store: Store, private key: string, private send: Sender,
              private random: () => number = Math.random, private now: () => number = Date.now) {}

  /** Write a request down and start sending; resolves after its first try (sent, queued for later, refused). */
  async enqueue(job: Omit<Job, "id" | "seq" | "attempts" | "notBefore" | "key">): Promise<FirstTry> {
    const full: Job = { ...job, id: jobId(), seq: this.seq++, key: this.key, attempts: 0, notBefore: 0 };
    const first = new Promise<FirstTry>((resolve) => this.waiting.set(full.id, resolve));
    try {
      await this.store.put(full);
    } catch {
      // storage full or gone: still try to send it now
      this.memory.push(full);
    }
    void this.drain();
    return first;
  }

  private memory: Job[] = [];

  private settle(id: string, result: FirstTry): void {
    const resolve = this.waiting.get(id);
    if (resolve) {
      this.waiting.delete(id);
      resolve(result);
    }
  }

  /** Send what is due, in order; schedules itself again for what must wait. */
  async drain(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    clearTimeout(this.timer);
    try {
      for (;;) {
        const jobs = [...(await this.store.all()), ...this.memory]
          .filter((j) => j.key === this.key).sort((a, b) => a.seq - b.seq);
        const job = jobs[0];
        if (!job || this.stopped) return;
        const wait = job.notBefore - this.now();
        if (wait > 0) {
          for (const j of jobs) this.settle(j.id, { kind: "queued" });
          this.timer = setTimeout(() => void this.drain(), wait);
          return;
        }
        const outcome = await this.send(job);
        if (outcome.kind === "retry") {
          job.attempts += 1;
          job.notBefore = this.now() + (outcome.afterMs ?? backoff(job.attempts, this.random));
          job.retryAfter = outcome.afterMs !== null;
          await this.keep(job);
          this.settle(job.id, { kind: "queued" });
          continue;
        }
        await this.forget(job);
        this.settle(job.id, outcome.kind === "sent" ? outcome : { kind: "refused", detail: outcome.detail });
      }
    } finally {
      this.running = false;
    }
  }

  private async keep(job: Job): Promise<void> {
    if (this.memory.includes(job)) return;
    await this.store.put(job).catch(() => this.memory.push(job));
  }

  private async forget(job: Job): Promise<void> {
    this.memory = this.memory.filter((j) => j.id !== job.id);
    await this.store.delete(job.id).catch(() => undefined);
  }

  /** Retry now what waits for the network (the browser says it is back online). */
  async wake(): Promise<void> {
    for (const job of await this.store.all()) {
      if (job.key === this.key && job.notBefore > this.now() && job.attempts > 0 && !job.retryAfter) {
        job.notBefore = 0;
        await this.store.put(job);
      }
    }
    void this.drain();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
