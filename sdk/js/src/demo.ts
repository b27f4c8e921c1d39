// The demo shop (/sdk/v1/demo): starts the SDK with the key from `?key=` or the form, and gives the page
// something to report: console lines, a failing checkout request and an uncaught error.
interface RelayGlobal { init(o: { key: string; replay?: { sampleRate: number } }): Promise<void> }

const relay = (window as unknown as { Relay: RelayGlobal }).Relay;
const form = document.getElementById("setup") as HTMLFormElement;
const input = document.getElementById("key") as HTMLInputElement;
const state = document.getElementById("state") as HTMLElement;
let cart = 0;

async function start(key: string): Promise<void> {
  localStorage.setItem("relay.demo.key", key);
  input.value = key;
  try {
    await relay.init({ key, replay: { sampleRate: 1 } });
    state.textContent = "Relay is running: use the Feedback button at the bottom right.";
    console.info("demo shop ready");
  } catch (error) {
    state.textContent = `Relay could not start: ${String(error)}`;
  }
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  if (input.value.trim()) void start(input.value.trim());
});
for (const button of document.querySelectorAll(".add")) {
  button.addEventListener("click", () => {
    cart += 1;
    (document.getElementById("cart") as HTMLElement).textContent = `Cart: ${cart}`;
    console.log("added to cart", { items: cart });
  });
}
document.getElementById("checkout")?.addEventListener("click", () => {
  console.warn("checking out", cart, "items");
  void fetch(`/demo-shop/checkout?cart=${cart}`, { method: "POST" }).then((r) => {
    if (!r.ok) throw new Error(`checkout failed with ${r.status}`);
  });
});

const given = new URLSearchParams(location.search).get("key") ?? localStorage.getItem("relay.demo.key");
if (given) void start(given);
