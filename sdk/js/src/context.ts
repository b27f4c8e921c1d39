// The technical context of a report: where the page was and what it ran on. The URL loses its query values.
import { stripQuery } from "./mask";

declare const __RELAY_VERSION__: string;
export const VERSION: string = typeof __RELAY_VERSION__ === "string" ? __RELAY_VERSION__ : "dev";

export function technicalContext(): Record<string, unknown> {
  const nav = navigator as Navigator & { connection?: { effectiveType?: string } };
  return {
    url: stripQuery(location.href),
    referrer: document.referrer ? stripQuery(document.referrer) : null,
    title: document.title,
    user_agent: nav.userAgent,
    language: nav.language,
    platform: nav.platform,
    viewport: { width: innerWidth, height: innerHeight, device_pixel_ratio: devicePixelRatio },
    screen: { width: screen.width, height: screen.height },
    timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
    online: nav.onLine,
    connection: nav.connection?.effectiveType ?? null,
    sdk: { name: "relay-browser", version: VERSION },
  };
}
