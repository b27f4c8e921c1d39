// The screenshot chunk (screenshot.mjs, loaded on demand): a PNG of the page rendered from its DOM by
// modern-screenshot, so no permission prompt. The widget is left out; every input and every element under a
// masked selector (the project's privacy rules, `.relay-mask`) is blanked in the copy before it is drawn.
import { domToBlob } from "modern-screenshot";
import { SDK_REQUEST } from "./capture/network";
import { selectorList } from "./mask";

const MARK = "data-relay-blank";

/** Blank a cloned element: inputs lose their value, anything else its text and images, keeping its size. */
export function blank(el: HTMLElement): void {
  if (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement) {
    el.value = "";
    el.setAttribute("value", "");
    if (el instanceof HTMLTextAreaElement) el.textContent = "";
    el.setAttribute("placeholder", "");
  }
  el.style.setProperty("color", "transparent", "important");
  el.style.setProperty("-webkit-text-fill-color", "transparent", "important");
  el.style.setProperty("background", "#9ca3af", "important");
  el.style.setProperty("text-shadow", "none", "important");
  // The words themselves go too: whatever styles the renderer copies, nothing of them can be drawn.
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    node.textContent = (node.textContent ?? "").replace(/\S/g, "\u2007");
  }
  for (const child of el.querySelectorAll<HTMLElement>("*")) child.style.setProperty("visibility", "hidden", "important");
}

/** What the browser paints behind the page: the root's or body's background, else the canvas's white (a
 * transparent PNG would show the page's text on whatever the dashboard draws it over). */
export function pageBackground(doc: Document = document): string {
  for (const el of [doc.documentElement, doc.body]) {
    const colour = el ? getComputedStyle(el).backgroundColor : "";
    if (colour && colour !== "transparent" && !/^rgba\(.*,\s*0\)$/.test(colour)) return colour;
  }
  return "#ffffff";
}

export async function capture(masked: string[]): Promise<Blob> {
  const selector = selectorList(masked);
  const marked = selector ? [...document.querySelectorAll<HTMLElement>(selector)] : [];
  for (const el of marked) el.setAttribute(MARK, "");
  try {
    const blob = await domToBlob(document.documentElement, {
      type: "image/png",
      width: innerWidth,
      height: innerHeight,
      scale: Math.min(devicePixelRatio || 1, 2),
      backgroundColor: pageBackground(),
      timeout: 5000,
      filter: (node) => !(node instanceof Element && node.localName === "relay-widget"),
      onCloneNode: (cloned) => {
        if (cloned instanceof Element) {
          for (const el of cloned.querySelectorAll<HTMLElement>(`[${MARK}]`)) blank(el);
        }
      },
      features: { restoreScrollPosition: true },
      // Its fetches of the page's images and fonts are marked as the SDK's, so capture leaves them out. (The
      // whole `fetch` option is given: modern-screenshot takes it as it is, defaults included.)
      fetch: {
        requestInit: { cache: "force-cache", [SDK_REQUEST]: true } as RequestInit,
        bypassingCache: false,
        placeholderImage: "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7",
      },
    });
    if (!blob) throw new Error("the page could not be drawn");
    return blob;
  } finally {
    for (const el of marked) el.removeAttribute(MARK);
  }
}
