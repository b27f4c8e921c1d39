// The ES module (`import Relay from ".../sdk/v1/relay.mjs"`): the same API as `window.Relay`.
import { chunksAt, createApi } from "./api";

const Relay = createApi(import.meta.url, chunksAt(import.meta.url));
export default Relay;
export const { init, identify, report, openWidget, flags, shutdown } = Relay;
