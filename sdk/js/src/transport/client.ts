// Talking to Relay's ingest API: the key in Authorization, JSON in and out, and each answer sorted into
// sent, retry (network down, 408/429/5xx, with Retry-After when given) or refused (any other 4xx).
import { retryAfter } from "./backoff";
import type { Outcome } from "./queue";
import type { Job } from "./store";

const RETRY = new Set([408, 425, 429, 500, 502, 503, 504]);

export class Client {
  /** The page's own fetch as it was before capture wrapped it. */
  private fetch: typeof fetch;

  constructor(readonly endpoint: string, readonly key: string, fetchImpl: typeof fetch = fetch) {
    this.fetch = fetchImpl.bind(globalThis);
  }

  url(path: string): string {
    return this.endpoint + path;
  }

  /** Whether a URL is one of the SDK's own (not captured as the page's traffic). */
  owns(url: string): boolean {
    return url.startsWith(this.endpoint + "/v1/ingest/") || url.startsWith(this.endpoint + "/sdk/");
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { Authorization: `Bearer ${this.key}`, ...extra };
  }

  /** One try of a job. */
  async send(job: Job, keepalive = false): Promise<Outcome> {
    const headers = this.headers();
    if (job.contentType) headers["Content-Type"] = job.contentType;
    if (job.contentEncoding) headers["Content-Encoding"] = job.contentEncoding;
    let response: Response;
    try {
      response = await this.fetch(this.url(job.path), { method: job.method, headers, body: job.body ?? null,
        keepalive, credentials: "omit", mode: "cors" });
    } catch {
      return { kind: "retry", afterMs: null };
    }
    if (response.ok) {
      const type = response.headers.get("content-type") ?? "";
      return { kind: "sent", body: type.includes("json") ? await response.json().catch(() => null) : null };
    }
    if (RETRY.has(response.status)) return { kind: "retry", afterMs: retryAfter(response.headers.get("retry-after")) };
    const problem = await response.json().catch(() => null) as { detail?: string; title?: string } | null;
    return { kind: "refused", status: response.status,
      detail: problem?.detail ?? problem?.title ?? `HTTP ${response.status}` };
  }

  /** A GET whose answer the page needs now (flags, config, board): JSON or an error. */
  async get<T>(path: string, extra: Record<string, string> = {}): Promise<T> {
    const response = await this.fetch(this.url(path), { headers: this.headers(extra), credentials: "omit" });
    if (!response.ok) throw new Error(`Relay answered ${response.status} to GET ${path.split("?")[0]}`);
    return await response.json() as T;
  }

  /** A POST whose answer the page needs now (votes, chat): JSON or an error. */
  async post<T>(path: string, body: unknown, extra: Record<string, string> = {}): Promise<T> {
    const response = await this.fetch(this.url(path), { method: "POST", credentials: "omit",
      headers: this.headers({ "Content-Type": "application/json", ...extra }), body: JSON.stringify(body) });
    if (!response.ok) throw new Error(`Relay answered ${response.status} to POST ${path.split("?")[0]}`);
    return await response.json() as T;
  }
}
