// The widget's further views (extras.mjs, loaded when one is opened): the public board with votes, the
// roadmap, chat (its conversation token kept in the page's localStorage), and surveys the server chose
// for this page (each recorded as seen here, so it is not shown again).
import { uuid7 } from "../ids";
import type { Relay } from "../relay";

interface Item { id: string; title: string; description?: string | null; status: string; vote_count?: number;
  voted?: boolean }
interface Page<T> { data: T[] }
interface Question { id: string; type: string; text: string; options?: (string | number)[] }
export interface SurveyToShow { id: string; name: string; definition: { title?: string; questions: Question[];
  thankYouMessage?: string } }
interface Message { id: string; direction: string; body: string }

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text = "", attrs: Record<string, string> = {}):
  HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** The panel's live status line: where a failed vote or message says so (an error thrown from a click
 * handler would reach the page's `unhandledrejection` and be captured as the page's own error). */
function status(): HTMLElement {
  return el("p", "", { class: "status", role: "status", "aria-live": "polite" });
}

async function attempt(line: HTMLElement, what: string, run: () => Promise<void>): Promise<void> {
  line.textContent = "";
  try {
    await run();
  } catch {
    line.textContent = `Could not ${what}: please try again.`;
  }
}

export async function render(relay: Relay, view: string, panel: HTMLElement): Promise<void> {
  if (view === "board") return board(relay, panel);
  if (view === "roadmap") return roadmap(relay, panel);
  if (view === "chat") return chat(relay, panel);
}

async function board(relay: Relay, panel: HTMLElement): Promise<void> {
  const page = await relay.client.get<Page<Item>>(`/v1/ingest/feedback-items?session_id=${relay.sessionId}`);
  const list = el("ul", "", { "aria-label": "Ideas" });
  const line = status();
  for (const item of page.data) {
    const li = el("li");
    const vote = el("button", `▲ ${item.vote_count ?? 0}`, { type: "button", "aria-label": `Vote for ${item.title}`,
      "aria-pressed": String(Boolean(item.voted)) });
    vote.addEventListener("click", () => void attempt(line, "vote", async () => {
      const receipt = await relay.client.post<{ vote_count: number }>(
        `/v1/ingest/feedback-items/${item.id}/votes`, { session_id: relay.sessionId, user: relay.user });
      vote.textContent = `▲ ${receipt.vote_count}`;
      vote.setAttribute("aria-pressed", "true");
    }));
    li.append(el("span", item.title), vote);
    list.append(li);
  }
  panel.replaceChildren(page.data.length ? list : el("p", "No ideas yet.", { class: "hint" }), line);
}

async function roadmap(relay: Relay, panel: HTMLElement): Promise<void> {
  const page = await relay.client.get<Page<Item>>("/v1/ingest/roadmap");
  const list = el("ul", "", { "aria-label": "Roadmap" });
  for (const item of page.data) {
    const li = el("li");
    li.append(el("span", item.title), el("span", item.status.replace(/_/g, " "), { class: "hint" }));
    list.append(li);
  }
  panel.replaceChildren(page.data.length ? list : el("p", "Nothing planned yet.", { class: "hint" }));
}

const CHAT = "relay.chat";

async function chat(relay: Relay, panel: HTMLElement): Promise<void> {
  const saved = JSON.parse(localStorage.getItem(CHAT) ?? "null") as { id: string; token: string; key: string } | null;
  const mine = saved && saved.key === relay.options.key ? saved : null;
  const log = el("ul", "", { "aria-label": "Messages", "aria-live": "polite" });
  const input = el("textarea", "", { id: "relay-chat", "aria-label": "Your message" });
  const send = el("button", "Send message", { type: "submit", class: "send" });
  const form = el("form");
  const line = status();
  form.append(log, input, line, send);
  const show = (messages: Message[]) => log.replaceChildren(...messages.map((m) =>
    el("li", `${m.direction === "inbound" ? "You" : "Team"}: ${m.body}`)));
  if (mine) {
    show((await relay.client.get<Page<Message>>(`/v1/ingest/conversations/${mine.id}/messages`,
      { "X-Relay-Conversation-Token": mine.token })).data);
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const body = input.value.trim();
    if (body) void attempt(line, "send your message", () => say(body));
  });
  const say = async (body: string): Promise<void> => {
    const current = JSON.parse(localStorage.getItem(CHAT) ?? "null") as typeof saved;
    if (current && current.key === relay.options.key) {
      await relay.client.post(`/v1/ingest/conversations/${current.id}/messages`, { id: uuid7(), body },
        { "X-Relay-Conversation-Token": current.token });
      show((await relay.client.get<Page<Message>>(`/v1/ingest/conversations/${current.id}/messages`,
        { "X-Relay-Conversation-Token": current.token })).data);
    } else {
      const started = await relay.client.post<{ id: string; token: string }>("/v1/ingest/conversations",
        { id: uuid7(), session_id: relay.sessionId, user: relay.user, body });
      localStorage.setItem(CHAT, JSON.stringify({ ...started, key: relay.options.key }));
      show([{ id: started.id, direction: "inbound", body }]);
    }
    input.value = "";
  };
  panel.replaceChildren(form);
}

/** Show a survey in its own small dialog; recorded as seen at once, answered or not. */
export function showSurvey(relay: Relay, survey: SurveyToShow): void {
  const seen = JSON.parse(localStorage.getItem("relay.surveys.seen") ?? "[]") as string[];
  localStorage.setItem("relay.surveys.seen", JSON.stringify([...seen, survey.id].slice(-100)));
  const host = relay.widget?.shadowRoot;
  if (!host) return;
  const box = el("form", "", { class: "dialog", role: "dialog", "aria-label": survey.definition.title ?? survey.name });
  box.append(el("h2", survey.definition.title ?? survey.name));
  survey.definition.questions.forEach((q, i) => {
    const id = `relay-q${i}`;
    box.append(el("label", q.text, { for: id }));
    if (q.options?.length) {
      const select = el("select", "", { id, name: q.id });
      for (const o of q.options) select.append(el("option", String(o), { value: String(o) }));
      box.append(select);
    } else {
      box.append(el("input", "", { id, name: q.id, type: q.type === "nps" || q.type === "rating" ? "number" : "text" }));
    }
  });
  const close = el("button", "Not now", { type: "button" });
  close.addEventListener("click", () => box.remove());
  box.addEventListener("keydown", (e) => {
    if (e.key === "Escape") box.remove();
  });
  const actions = el("div", "", { class: "actions" });
  actions.append(close, el("button", "Submit", { type: "submit", class: "send" }));
  box.append(actions);
  box.addEventListener("submit", async (e) => {
    e.preventDefault();
    const responses: Record<string, string | number> = {};
    for (const [k, v] of new FormData(box)) responses[k] = /^\d+$/.test(String(v)) ? Number(v) : String(v);
    // A client id, as for every interaction: the outbox may send it again, Relay stores it once.
    await relay.json(`/v1/ingest/surveys/${survey.id}/responses`, { id: uuid7(), session_id: relay.sessionId,
      user: relay.user, responses });
    box.replaceChildren(el("p", survey.definition.thankYouMessage ?? "Thanks", { class: "thanks" }));
    setTimeout(() => box.remove(), 2500);
  });
  host.append(box);
}
