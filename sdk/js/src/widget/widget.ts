// `<relay-widget>`: the launcher ("Feedback") and the dialog ("Send feedback") in an open shadow root.
// Keyboard and screen-reader use: the dialog is labelled, focus moves into it and is trapped there, Escape
// closes it and gives focus back to the launcher, and the status line is a live region.
import type { Relay } from "../relay";
import type { WidgetOptions } from "../types";
import { CSS } from "./style";

const HTML = `<button class="launcher" type="button" aria-haspopup="dialog" aria-expanded="false">Feedback</button>
<div class="dialog" role="dialog" aria-modal="true" aria-labelledby="relay-title" hidden>
<header><h2 id="relay-title">Send feedback</h2><button class="close" type="button" aria-label="Close">×</button></header>
<nav aria-label="Relay"><button type="button" data-view="report" aria-pressed="true">Report</button>
<button type="button" data-view="board" aria-pressed="false">Ideas</button>
<button type="button" data-view="roadmap" aria-pressed="false">Roadmap</button>
<button type="button" data-view="chat" aria-pressed="false">Chat</button></nav>
<form novalidate>
<fieldset class="row" style="border:0;padding:0"><legend class="hint">Kind</legend>
<label class="row"><input type="radio" name="type" value="bug" checked> Problem</label>
<label class="row"><input type="radio" name="type" value="feedback"> Idea</label></fieldset>
<label for="relay-text">What happened?</label>
<textarea id="relay-text" name="text" required maxlength="10000"></textarea>
<label class="row"><input type="checkbox" name="screenshot" checked> Include screenshot</label>
<label for="relay-file" class="hint">Or attach an image</label>
<input id="relay-file" name="file" type="file" accept="image/png,image/jpeg">
<p class="status" role="status" aria-live="polite"></p>
<button class="send" type="submit">Send</button>
</form>
<div class="done" hidden><p class="thanks" tabindex="-1">Thanks</p><p class="hint">Your report was sent to the team.</p>
<button type="button" class="again">Send another</button></div>
<div class="panel" hidden></div>
</div>`;

const FOCUSABLE = "button,textarea,input,select,a[href],[tabindex]:not([tabindex='-1'])";

export class RelayWidget extends HTMLElement {
  relay: Relay | undefined;
  private root: ShadowRoot;

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
    const style = document.createElement("style");
    style.textContent = CSS;
    this.root.append(style);
    const holder = document.createElement("div");
    holder.innerHTML = HTML;
    this.root.append(...holder.childNodes);
    this.$(".launcher").addEventListener("click", () => (this.dialog.hidden ? this.open() : this.close()));
    this.$(".close").addEventListener("click", () => this.close());
    this.$(".again").addEventListener("click", () => this.view("report"));
    this.root.addEventListener("keydown", (e) => this.keydown(e as KeyboardEvent));
    this.$<HTMLFormElement>("form").addEventListener("submit", (e) => {
      e.preventDefault();
      void this.send();
    });
    for (const b of this.root.querySelectorAll<HTMLButtonElement>("nav button")) {
      b.addEventListener("click", () => this.view(b.dataset.view ?? "report"));
    }
  }

  $<T extends HTMLElement = HTMLElement>(selector: string): T {
    return this.root.querySelector(selector) as T;
  }

  get dialog(): HTMLElement {
    return this.$(".dialog");
  }

  open(): void {
    this.dialog.hidden = false;
    this.$(".launcher").setAttribute("aria-expanded", "true");
    const first = this.dialog.querySelector<HTMLElement>(this.$("form").hidden ? FOCUSABLE : "textarea");
    first?.focus();
  }

  close(): void {
    if (this.dialog.hidden) return;
    this.dialog.hidden = true;
    const launcher = this.$(".launcher");
    launcher.setAttribute("aria-expanded", "false");
    if (!launcher.hidden) launcher.focus();
  }

  private keydown(e: KeyboardEvent): void {
    if (e.key === "Escape") {
      e.stopPropagation();
      this.close();
      return;
    }
    if (e.key !== "Tab" || this.dialog.hidden) return;
    const items = [...this.dialog.querySelectorAll<HTMLElement>(FOCUSABLE)]
      .filter((el) => !el.closest("[hidden]") && !(el as HTMLButtonElement).disabled);
    const first = items[0];
    const last = items[items.length - 1];
    const active = this.root.activeElement;
    if (!first || !last) return;
    if (e.shiftKey && (active === first || !this.dialog.contains(active))) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (active === last || !this.dialog.contains(active))) {
      e.preventDefault();
      first.focus();
    }
  }

  view(name: string): void {
    for (const b of this.root.querySelectorAll<HTMLButtonElement>("nav button")) {
      b.setAttribute("aria-pressed", String(b.dataset.view === name));
    }
    const form = this.$<HTMLFormElement>("form");
    form.hidden = name !== "report";
    this.$(".done").hidden = true;
    const panel = this.$(".panel");
    panel.hidden = name === "report";
    if (name === "report") {
      form.reset();
      this.status("");
      return;
    }
    panel.textContent = "Loading…";
    const relay = this.relay;
    if (!relay) return;
    relay.chunks.extras().then((extras) => extras.render(relay, name, panel))
      .catch(() => (panel.textContent = "Not available offline."));
  }

  private status(text: string): void {
    this.$(".status").textContent = text;
  }

  private async send(): Promise<void> {
    const relay = this.relay;
    const form = this.$<HTMLFormElement>("form");
    const data = new FormData(form);
    const text = String(data.get("text") ?? "").trim();
    if (!relay) return;
    if (!text) {
      this.status("Please describe what happened.");
      this.$("textarea").focus();
      return;
    }
    const file = data.get("file");
    const attached = file instanceof Blob && file.size > 0 ? file : undefined;
    const button = this.$<HTMLButtonElement>(".send");
    button.disabled = true;
    this.status("Sending…");
    try {
      await relay.report({ type: data.get("type") === "feedback" ? "feedback" : "bug", text,
        screenshot: attached ?? data.get("screenshot") === "on" }, "widget");
      form.hidden = true;
      this.$(".done").hidden = false;
      this.$(".thanks").focus();
    } catch (error) {
      this.status(`Could not send: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      button.disabled = false;
    }
  }
}

/** Put the widget on the page (once the body exists). */
export function mountWidget(relay: Relay, options: WidgetOptions & { launcher?: boolean }): HTMLElement {
  if (!customElements.get("relay-widget")) customElements.define("relay-widget", RelayWidget);
  const el = document.createElement("relay-widget") as RelayWidget;
  el.relay = relay;
  el.setAttribute("placement", options.placement ?? "bottom-right");
  el.setAttribute("theme", options.theme ?? "auto");
  if (options.launcher === false) el.$(".launcher").hidden = true;
  const attach = () => document.body.append(el);
  if (document.body) attach();
  else addEventListener("DOMContentLoaded", attach, { once: true });
  return el;
}
