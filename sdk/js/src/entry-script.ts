// The classic script (`<script src=".../sdk/v1/relay.js">`): defines `window.Relay`.
import { chunksAt, createApi } from "./api";

const script = document.currentScript as HTMLScriptElement | null;
const base = script?.src || location.href;
(window as unknown as { Relay: unknown }).Relay = createApi(base, chunksAt(base));
