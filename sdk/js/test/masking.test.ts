import { describe, expect, it } from "vitest";
import { ALWAYS_MASKED, cap, describe as text, isMasked, selectorList, stripQuery } from "../src/mask";
import { blank, pageBackground } from "../src/screenshot";

describe("stripQuery", () => {
  it("keeps parameter names, drops values, fragment and credentials", () => {
    expect(stripQuery("https://u:p@a.example/x?card=4242&card=1&q=#t")).toBe("https://a.example/x?card=&q=");
    expect(stripQuery("/rel?a=1", "https://h.example/base/")).toBe("https://h.example/rel?a=");
    expect(stripQuery("https://a.example/plain")).toBe("https://a.example/plain");
  });
});

describe("caps", () => {
  it("cuts long text and describes values", () => {
    expect(cap("abcdef", 3)).toBe("abc…");
    expect(text({ a: [1, 2] })).toBe('{"a":[1,2]}');
    expect(text(undefined)).toBe("undefined");
  });
});

describe("selectors", () => {
  it("drops selectors the browser cannot parse and matches ancestors", () => {
    document.body.innerHTML = '<div class="secret"><span id="in">x</span></div><input id="pw" type="password">';
    const list = selectorList([...ALWAYS_MASKED, ".secret", "::bad(("]);
    expect(list).not.toContain("bad");
    expect(isMasked(document.getElementById("in") as Element, list)).toBe(true);
    expect(isMasked(document.getElementById("pw") as Element, list)).toBe(true);
    expect(isMasked(document.body, list)).toBe(false);
  });
  it("blanks an input's value and hides an element's content", () => {
    document.body.innerHTML = '<input id="card" value="4242"><p id="p"><b>jane@example.com</b></p>';
    const input = document.getElementById("card") as HTMLInputElement;
    blank(input);
    expect(input.value).toBe("");
    expect(input.getAttribute("value")).toBe("");
    const p = document.getElementById("p") as HTMLElement;
    blank(p);
    expect(p.style.getPropertyValue("color")).toBe("transparent");
    expect((p.querySelector("b") as HTMLElement).style.getPropertyValue("visibility")).toBe("hidden");
  });
});

describe("screenshot background", () => {
  it("is the page's own, else white", () => {
    document.documentElement.style.background = "";
    document.body.style.background = "";
    expect(pageBackground()).toBe("#ffffff");
    document.body.style.background = "rgb(1, 2, 3)";
    expect(pageBackground()).toBe("rgb(1, 2, 3)");
    document.documentElement.style.background = "rgb(4, 5, 6)";
    expect(pageBackground()).toBe("rgb(4, 5, 6)");
    document.documentElement.style.background = "";
    document.body.style.background = "";
  });
});
