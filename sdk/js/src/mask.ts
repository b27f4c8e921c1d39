// What leaves the browser is masked here first: URLs lose their query values, long strings are capped, and
// the elements a project's privacy rules (or the page) name are blanked in screenshots and replays.

/** The URL with every query value and the fragment removed: `/a?x=1&y=2#t` becomes `/a?x=&y=`. */
export function stripQuery(raw: string, base?: string): string {
  let url: URL;
  try {
    url = new URL(raw, base ?? (typeof location !== "undefined" ? location.href : undefined));
  } catch {
    return raw.split(/[?#]/)[0] ?? "";
  }
  const names = [...new Set([...url.searchParams.keys()])];
  url.hash = "";
  url.search = "";
  if (url.username || url.password) {
    url.username = "";
    url.password = "";
  }
  return url.href + (names.length ? "?" + names.map((n) => encodeURIComponent(n) + "=").join("&") : "");
}

/** At most `max` characters, marked when cut. */
export function cap(text: string, max: number): string {
  return text.length > max ? text.slice(0, max) + "…" : text;
}

/** One console argument as text, bounded in size and depth. */
export function describe(value: unknown, max = 1000): string {
  if (typeof value === "string") return cap(value, max);
  if (value instanceof Error) return cap(`${value.name}: ${value.message}`, max);
  if (value === undefined || typeof value === "function" || typeof value === "symbol") return String(value);
  try {
    const seen = new WeakSet<object>();
    return cap(JSON.stringify(value, (_k, v: unknown) => {
      if (typeof v === "object" && v !== null) {
        if (seen.has(v)) return "[circular]";
        seen.add(v);
        if (typeof Node !== "undefined" && v instanceof Node) return `[${v.nodeName}]`;
      }
      return typeof v === "bigint" ? v.toString() : v;
    }) ?? String(value), max);
  } catch {
    return cap(String(value), max);
  }
}

/** Selectors always masked: every input (passwords above all), and what a page marks itself. */
export const ALWAYS_MASKED = ["input", "textarea", "select", "[contenteditable]", ".relay-mask", "[data-relay-mask]"];

/** One selector list for `matches`/`querySelectorAll`, dropping any the browser cannot parse. */
export function selectorList(selectors: string[], doc: Document = document): string {
  const ok = selectors.filter((s) => {
    try {
      doc.createDocumentFragment().querySelector(s);
      return true;
    } catch {
      return false;
    }
  });
  return ok.join(", ");
}

/** Whether a node falls under a masked selector (the node or an ancestor). */
export function isMasked(node: Element, selector: string): boolean {
  return selector !== "" && node.closest(selector) !== null;
}
