import { beforeEach, describe, expect, it } from "vitest";
import { sampledForReplay } from "../src/sampling";

describe("replay sampling", () => {
  beforeEach(() => sessionStorage.clear());

  it("never records at 0 and always at 1", () => {
    expect(sampledForReplay(0, () => sessionStorage, () => 0)).toBe(false);
    expect(sampledForReplay(1, () => sessionStorage, () => 0.999)).toBe(true);
  });

  it("draws once per session: the next page keeps the decision", () => {
    expect(sampledForReplay(0.5, () => sessionStorage, () => 0.3)).toBe(true);
    expect(sampledForReplay(0.5, () => sessionStorage, () => 0.9)).toBe(true);
    sessionStorage.clear();
    expect(sampledForReplay(0.5, () => sessionStorage, () => 0.9)).toBe(false);
    expect(sampledForReplay(0.5, () => sessionStorage, () => 0.1)).toBe(false);
  });

  it("draws per page when storage is blocked, rather than failing init", () => {
    const blocked = () => { throw new DOMException("denied", "SecurityError"); };
    expect(sampledForReplay(0.5, blocked, () => 0.2)).toBe(true);
    expect(sampledForReplay(0.5, blocked, () => 0.8)).toBe(false);
  });
});
