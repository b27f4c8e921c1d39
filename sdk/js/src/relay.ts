// The public API of Relay's browser SDK (API.md, "The browser SDK"). Everything a page calls is in this file:
//
//   await Relay.init({key, endpoint?, user?, widget?, replay?, capture?})
//   Relay.identify(user)            // who the end user is; `user_hash` proves it (identity verification)
//   await Relay.report({type, text, title?, severity?, screenshot?})   // → the stored interaction's id
//   Relay.openWidget()              // for a page's own button when `widget: false`
//   await Relay.flags()             // → {flag: boolean}
//   Relay.shutdown()                // stop capture, recording and the widget
//
// Capture (console, network, errors) fills bounded ring buffers from `init` on; a report carries their
// contents. Every request goes through the outbox (transport/queue.ts), so a report made offline arrives once
// the network is back, even after a reload. Replay, screenshots and the board/roadmap/chat/survey views are
// separate chunks loaded on demand, next to this file.
import { captureConsole } from "./capture/console";
import { captureErrors } from "./capture/errors";
import { captureNetwork } from "./capture/network";
import { technicalContext } from "./context";
import { uuid7 } from "./ids";
import { ALWAYS_MASKED } from "./mask";
import { Ring } from "./ring";
import { sampledForReplay } from "./sampling";
import { Client } from "./transport/client";
import { Queue, type FirstTry } from "./transport/queue";
import { openStore } from "./transport/store";
import type { ConsoleEntry, ErrorEntry, InitOptions, NetworkEntry, ReportInput, RelayUser } from "./types";
import type { Recorder } from "./replay/recorder";

export type { InitOptions, ReportInput, RelayUser } from "./types";

const SESSION_KEY = "relay.session";
/** Surveys due later than this (seconds) wait for a later page rather than a timer. */
const SURVEY_WAIT_MAX_S = 3600;
/** The console as it was before capture: the SDK's own notes are not the page's logs. */
const note = console.warn.bind(console);

export interface Chunks {
  replay(): Promise<typeof import("./replay/recorder")>;
  screenshot(): Promise<typeof import("./screenshot")>;
  extras(): Promise<typeof import("./widget/extras")>;
}

/** A running SDK: what `init` made. */
export class Relay {
  readonly console = new Ring<ConsoleEntry>(100);
  readonly network = new Ring<NetworkEntry>(100);
  readonly errors = new Ring<ErrorEntry>(50);
  readonly client: Client;
  sessionId: string;
  user: RelayUser | undefined;
  masked: string[] = [...ALWAYS_MASKED];
  flagMap: Record<string, boolean> = {};
  recorder: Recorder | undefined;
  widget: HTMLElement | undefined;
  private stops: (() => void)[] = [];
  private ended = false;
  private queue!: Queue;
  readonly ready: Promise<void>;

  constructor(readonly options: InitOptions, readonly chunks: Chunks, endpoint: string) {
    if (!options || typeof options.key !== "string" || !options.key.startsWith("rk_")) {
      throw new TypeError("Relay.init: `key` must be an API key with the ingest scope (rk_…)");
    }
    this.client = new Client((options.endpoint ?? endpoint).replace(/\/+$/, ""), options.key);
    this.user = options.user;
    this.sessionId = this.session();
    const capture = options.capture ?? {};
    if (capture.console !== false) this.stops.push(captureConsole(this.console));
    if (capture.network !== false) this.stops.push(captureNetwork(this.network, (u) => this.client.owns(u)));
    if (capture.errors !== false) this.stops.push(captureErrors(this.errors));
    this.masked.push(...(options.mask ?? []));
    this.ready = this.start();
  }

  private session(): string {
    try {
      const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null") as { id: string; key: string } | null;
      if (stored && stored.key === this.options.key) return stored.id;
    } catch {
      // no storage: one session per page
    }
    const id = uuid7();
    try {
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ id, key: this.options.key }));
    } catch {
      // ignore
    }
    return id;
  }

  private async start(): Promise<void> {
    this.queue = new Queue(await openStore(), this.options.key, (job) => this.client.send(job));
    const online = () => void this.queue.wake();
    addEventListener("online", online);
    this.stops.push(() => removeEventListener("online", online));
    void this.sendSession();
    const config = this.client.get<{ privacy: { selectors: string[] }; flags: Record<string, boolean> }>(
      "/v1/ingest/config").catch(() => null);
    const found = await config;
    if (found) {
      this.masked.push(...found.privacy.selectors);
      this.flagMap = found.flags;
    }
    const rate = this.options.replay?.sampleRate ?? 0;
    if (rate > 0) await this.startReplay(rate);
    void this.surveys();
  }

  private sendSession(): Promise<FirstTry> {
    const nav = navigator;
    return this.json("/v1/ingest/sessions", {
      id: this.sessionId, user: this.user, user_agent: nav.userAgent,
      device: { language: nav.language, platform: nav.platform, viewport: { width: innerWidth, height: innerHeight } },
    });
  }

  private async startReplay(rate: number): Promise<void> {
    if (!sampledForReplay(rate)) return;
    try {
      const { Recorder } = await this.chunks.replay();
      this.recorder = new Recorder(this, this.masked);
      this.recorder.start();
    } catch (error) {
      this.warn("replay could not start", error);
    }
  }

  /** Ask which survey to show now; when one is only waiting for its delay (`check_again_in`, seconds), ask
   * again then, so a page left open (a single-page app) still shows it. */
  private async surveys(): Promise<void> {
    if (this.ended) return;
    try {
      const url = encodeURIComponent(location.href.split("#")[0] ?? "");
      const found = await this.client.get<{ data: { id: string }[]; check_again_in?: number | null }>(
        `/v1/ingest/surveys?url=${url}&session_id=${this.sessionId}`);
      const seen = JSON.parse(localStorage.getItem("relay.surveys.seen") ?? "[]") as string[];
      const next = found.data.find((s) => !seen.includes(s.id));
      if (next) {
        (await this.chunks.extras()).showSurvey(this, next as never);
        return;
      }
      const wait = found.check_again_in;
      if (typeof wait === "number" && wait > 0 && wait <= SURVEY_WAIT_MAX_S && !this.ended) {
        const timer = setTimeout(() => void this.surveys(), wait * 1000 + 500);
        this.stops.push(() => clearTimeout(timer));
      }
    } catch {
      // no survey now
    }
  }

  /** Queue a JSON POST; resolves after its first try. */
  json(path: string, body: unknown): Promise<FirstTry> {
    return this.enqueue({ method: "POST", path, body: JSON.stringify(body), contentType: "application/json" });
  }

  async enqueue(job: Parameters<Queue["enqueue"]>[0]): Promise<FirstTry> {
    await this.ready.catch(() => undefined);
    if (!this.queue) throw new Error("Relay is not running");
    return this.queue.enqueue(job);
  }

  identify(user: RelayUser): void {
    if (!user || typeof user.external_id !== "string" || !user.external_id) {
      throw new TypeError("Relay.identify: `external_id` is required");
    }
    this.user = { ...user };
    void this.sendSession();
  }

  /** Send a report; resolves with the stored interaction's id (its client id), once sent or safely queued. */
  async report(input: ReportInput, source: "sdk" | "widget" = "sdk"): Promise<string> {
    if (!input || typeof input.text !== "string") throw new TypeError("Relay.report: `text` is required");
    const id = uuid7();
    let shot: Blob | null = null;
    if (input.screenshot instanceof Blob) shot = input.screenshot;
    else if (input.screenshot) shot = await this.screenshot().catch((e: unknown) => (this.warn("no screenshot", e), null));
    const content: Record<string, unknown> = { text: input.text };
    if (input.title) content.title = input.title;
    const context = technicalContext();
    if (this.recorder) context.replay_id = this.recorder.replayId;
    const sent = this.json("/v1/ingest/interactions", {
      id, type: input.type, source, session_id: this.sessionId, user: this.user, content,
      severity: input.severity, logs: { console: this.console.toArray(), network: this.network.toArray(),
        errors: this.errors.toArray() }, technical_context: context,
    });
    if (shot) {
      void this.enqueue({ method: "POST", path: `/v1/ingest/interactions/${id}/media?kind=screenshot&id=${uuid7()}`,
        body: shot, contentType: shot.type || "image/png" });
    }
    this.recorder?.flush(id);
    const first = await sent;
    if (first.kind === "refused") throw new Error(`Relay refused the report: ${first.detail}`);
    return id;
  }

  /** A PNG of the page as the user sees it: the widget left out, inputs and masked elements blanked. */
  async screenshot(): Promise<Blob> {
    const { capture } = await this.chunks.screenshot();
    return capture(this.masked);
  }

  async flags(): Promise<Record<string, boolean>> {
    const found = await this.client.get<{ flags: Record<string, boolean> }>("/v1/ingest/flags");
    this.flagMap = found.flags;
    return found.flags;
  }

  warn(what: string, error?: unknown): void {
    note(`[relay] ${what}`, error ?? "");
  }

  /** Stop capture and the widget; a replay being recorded ends (its last chunk and `finish` are sent first). */
  async shutdown(): Promise<void> {
    this.ended = true;
    for (const stop of this.stops.splice(0)) stop();
    this.widget?.remove();
    const recorder = this.recorder;
    this.recorder = undefined;
    try {
      await recorder?.stop(true);
    } finally {
      this.queue?.stop();
    }
  }
}
