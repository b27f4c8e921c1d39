// Uncaught errors and unhandled promise rejections, with their stacks.
import { Ring } from "../ring";
import { cap, describe, stripQuery } from "../mask";
import type { ErrorEntry } from "../types";

const MAX_STACK = 4000;

export function errorEntry(type: string, reason: unknown, source?: string): ErrorEntry {
  const entry: ErrorEntry = { type, message: "", timestamp: new Date().toISOString() };
  if (reason instanceof Error) {
    entry.message = cap(`${reason.name}: ${reason.message}`, 1000);
    if (reason.stack) entry.stack = cap(reason.stack, MAX_STACK);
  } else {
    entry.message = describe(reason);
  }
  if (source) entry.source = stripQuery(source);
  return entry;
}

/** Start capturing into `ring`; returns the function that stops it. */
export function captureErrors(ring: Ring<ErrorEntry>, win: Window = window): () => void {
  const onError = (event: ErrorEvent) => {
    const where = event.filename ? `${event.filename}:${event.lineno}:${event.colno}` : undefined;
    ring.push(errorEntry("error", event.error ?? event.message, where));
  };
  const onRejection = (event: PromiseRejectionEvent) => ring.push(errorEntry("unhandledrejection", event.reason));
  win.addEventListener("error", onError);
  win.addEventListener("unhandledrejection", onRejection);
  return () => {
    win.removeEventListener("error", onError);
    win.removeEventListener("unhandledrejection", onRejection);
  };
}
