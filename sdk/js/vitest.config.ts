import { defineConfig } from "vitest/config";

export default defineConfig({
  define: { __RELAY_VERSION__: JSON.stringify("test") },
  test: { environment: "happy-dom", include: ["test/**/*.test.ts"] },
});
