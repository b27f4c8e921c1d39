// Console capture: level, message (arguments capped) and time of the last messages, the page's console
// left working as before.
import { Ring } from "../ring";
import { cap, describe } from "../mask";
import type { ConsoleEntry } from "../types";

const LEVELS = ["log", "info", "warn", "error", "debug"] as const;
const MAX_ARGS = 10;
const MAX_MESSAGE = 2000;

/** Start capturing into `ring`; returns the function that restores the console. */
export function captureConsole(ring: Ring<ConsoleEntry>, target: Console = console): () => void {
  const originals = new Map<string, (...args: unknown[]) => void>();
  for (const level of LEVELS) {
    const original = target[level] as (...args: unknown[]) => void;
    if (typeof original !== "function") continue;
    originals.set(level, original);
    target[level] = function (this: Console, ...args: unknown[]) {
      try {
        const message = args.slice(0, MAX_ARGS).map((a) => describe(a)).join(" ");
        ring.push({ level, message: cap(message, MAX_MESSAGE), timestamp: new Date().toISOString() });
      } catch {
        // capture never breaks the page's logging
      }
      return original.apply(this, args);
    };
  }
  return () => {
    for (const [level, original] of originals) (target as unknown as Record<string, unknown>)[level] = original;
  };
}
