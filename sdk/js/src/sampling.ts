// Whether this session is recorded: `replay.sampleRate` decides once per tab session (kept in
// sessionStorage, so every page of the session agrees and a replay is not cut in two by a new draw).

const KEY = "relay.replay.sampled";

/** Draw once per session; without storage (blocked, sandboxed) each page draws for itself. */
export function sampledForReplay(rate: number, storage: () => Storage = () => sessionStorage,
                                 random: () => number = Math.random): boolean {
  if (!(rate > 0)) return false;
  let decided: string | null = null;
  try {
    decided = storage().getItem(KEY);
  } catch {
    // no storage
  }
  const sampled = decided === "1" || decided === "0" ? decided === "1" : random() < rate;
  try {
    storage().setItem(KEY, sampled ? "1" : "0");
  } catch {
    // no storage
  }
  return sampled;
}
