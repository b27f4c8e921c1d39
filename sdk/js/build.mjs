// Builds dist/ from src/ with esbuild: the eager SDK as a classic script (relay.js, window.Relay) and as an
// ES module (relay.mjs); the chunks both load on demand as ES modules (replay.mjs, screenshot.mjs,
// extras.mjs); the dashboard's replay player (player.js, window.RelayPlayer); and the demo page.
import { build } from "esbuild";
import { copyFile, mkdir, readFile } from "node:fs/promises";

const pkg = JSON.parse(await readFile(new URL("./package.json", import.meta.url), "utf8"));
const common = {
  bundle: true,
  minify: true,
  target: ["es2020", "chrome91", "firefox90", "safari15"],
  legalComments: "none",
  define: { __RELAY_VERSION__: JSON.stringify(pkg.version) },
  logLevel: "warning",
};
await mkdir("dist", { recursive: true });
await Promise.all([
  build({ ...common, entryPoints: ["src/entry-script.ts"], format: "iife", outfile: "dist/relay.js" }),
  build({ ...common, entryPoints: ["src/entry-module.ts"], format: "esm", outfile: "dist/relay.mjs" }),
  build({ ...common, entryPoints: ["src/replay/recorder.ts"], format: "esm", outfile: "dist/replay.mjs" }),
  build({ ...common, entryPoints: ["src/screenshot.ts"], format: "esm", outfile: "dist/screenshot.mjs" }),
  build({ ...common, entryPoints: ["src/widget/extras.ts"], format: "esm", outfile: "dist/extras.mjs" }),
  build({ ...common, entryPoints: ["src/player.ts"], format: "iife", outfile: "dist/player.js",
          loader: { ".css": "text" } }),
  build({ ...common, entryPoints: ["src/demo.ts"], format: "iife", outfile: "dist/demo.js" }),
]);
await copyFile("src/demo.html", "dist/demo.html");
