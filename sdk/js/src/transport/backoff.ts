// When to try a failed send again: exponential backoff with jitter, or what the server said in Retry-After.

export const BASE_MS = 1000;
export const MAX_MS = 60_000;

/** Delay before attempt `attempt + 1` (attempt counts from 1): half the exponential step fixed, half random,
 * so many pages that failed together do not come back together. */
export function backoff(attempt: number, random: () => number = Math.random): number {
  const step = Math.min(MAX_MS, BASE_MS * 2 ** Math.max(0, attempt - 1));
  return Math.round(step / 2 + random() * (step / 2));
}

/** Retry-After in milliseconds (seconds or an HTTP date), or null when absent or unreadable. */
export function retryAfter(header: string | null, now: number = Date.now()): number | null {
  if (header === null || header.trim() === "") return null;
  const value = header.trim();
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}
