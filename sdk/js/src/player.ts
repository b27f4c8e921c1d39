// The replay player for the dashboard (player.js, a classic script): `window.RelayPlayer.mount(element,
// events)` plays a replay's rrweb events (GET …/replays/{id}/events) inside `element` and returns a handle
// with `play()`, `pause()` and `destroy()`. Built on @rrweb/replay; its stylesheet is injected once.
import { Replayer } from "@rrweb/replay";
import css from "@rrweb/replay/dist/style.css";

export interface PlayerHandle { play(): void; pause(): void; destroy(): void }

function mount(element: HTMLElement, events: unknown[]): PlayerHandle {
  if (!document.getElementById("relay-player-css")) {
    const style = document.createElement("style");
    style.id = "relay-player-css";
    style.textContent = css + ".relay-player{position:relative;overflow:hidden}";
    document.head.append(style);
  }
  element.classList.add("relay-player");
  const list = events as ConstructorParameters<typeof Replayer>[0];
  if (!Array.isArray(list) || list.length < 2) {
    element.textContent = "This replay has no events to play.";
    return { play() {}, pause() {}, destroy() {} };
  }
  const replayer = new Replayer(list, { root: element, mouseTail: false, skipInactive: true });
  const fit = () => {
    const frame = element.querySelector<HTMLElement>(".replayer-wrapper");
    const iframe = element.querySelector("iframe");
    if (!frame || !iframe) return;
    const scale = Math.min(1, element.clientWidth / (iframe.width ? Number(iframe.width) : element.clientWidth));
    frame.style.transform = `scale(${scale})`;
    frame.style.transformOrigin = "0 0";
    element.style.height = `${Number(iframe.height || 0) * scale}px`;
  };
  replayer.on("resize", fit);
  // The page's width changes too (a phone turned, a window narrowed): the recording is scaled to fit again.
  const watch = typeof ResizeObserver === "function" ? new ResizeObserver(fit) : null;
  watch?.observe(element);
  replayer.play();
  fit();
  return {
    play: () => replayer.play(),
    pause: () => replayer.pause(),
    destroy: () => { watch?.disconnect(); replayer.destroy(); element.replaceChildren(); },
  };
}

(window as unknown as { RelayPlayer: { mount: typeof mount } }).RelayPlayer = { mount };
