// `window.Relay` / the module's exports: one SDK per page, started by `init`.
import { Relay, type Chunks } from "./relay";
import type { InitOptions, ReportInput, RelayUser } from "./types";
import { mountWidget } from "./widget/widget";

export interface RelayApi {
  init(options: InitOptions): Promise<void>;
  identify(user: RelayUser): void;
  report(input: ReportInput): Promise<string>;
  openWidget(): void;
  flags(): Promise<Record<string, boolean>>;
  shutdown(): Promise<void>;
  readonly version: string;
}

export function createApi(base: string, chunks: Chunks): RelayApi {
  let current: Relay | undefined;
  const running = (): Relay => {
    if (!current) throw new Error("Relay: call Relay.init({key}) first");
    return current;
  };
  return {
    version: __RELAY_VERSION__,
    async init(options: InitOptions): Promise<void> {
      await current?.shutdown();
      const relay = new Relay(options, chunks, new URL(base).origin);
      current = relay;
      if (options.widget !== false) {
        const settings = typeof options.widget === "object" ? options.widget : {};
        relay.widget = mountWidget(relay, settings);
      }
      await relay.ready;
    },
    identify: (user) => running().identify(user),
    report: (input) => running().report(input),
    openWidget(): void {
      const relay = running();
      relay.widget ??= mountWidget(relay, { launcher: false });
      (relay.widget as HTMLElement & { open(): void }).open();
    },
    flags: () => running().flags(),
    async shutdown(): Promise<void> {
      const relay = current;
      current = undefined;
      await relay?.shutdown();
    },
  };
}

declare const __RELAY_VERSION__: string;

/** The chunks next to the file the SDK was loaded from (…/sdk/v1/). */
export function chunksAt(base: string): Chunks {
  const at = (name: string) => new URL(name, base).href;
  const load = <T>(name: string): Promise<T> => import(/* @vite-ignore */ at(name)) as Promise<T>;
  return {
    replay: () => load("replay.mjs"),
    screenshot: () => load("screenshot.mjs"),
    extras: () => load("extras.mjs"),
  };
}
