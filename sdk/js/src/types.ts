// The SDK's public types: what `Relay.init`, `Relay.identify` and `Relay.report` take (API.md, "The browser SDK").

/** The end user, as the page knows them; `user_hash` is HMAC-SHA256(identity secret, external_id) in hex,
 * computed by the customer's server, so Relay can trust `email` and `name`. */
export interface RelayUser {
  external_id: string;
  email?: string;
  name?: string;
  user_hash?: string;
  avatar_url?: string;
  traits?: Record<string, unknown>;
}

export interface CaptureOptions {
  console?: boolean;
  network?: boolean;
  errors?: boolean;
}

export interface ReplayOptions {
  /** Share of sessions recorded, 0 to 1. */
  sampleRate: number;
}

export interface WidgetOptions {
  /** Corner of the launcher. */
  placement?: "bottom-right" | "bottom-left" | "top-right" | "top-left";
  theme?: "light" | "dark" | "auto";
}

export interface InitOptions {
  /** An API key with the `ingest` scope. */
  key: string;
  /** Where Relay answers; defaults to the origin the script was loaded from. */
  endpoint?: string;
  user?: RelayUser;
  /** `false` hides the launcher (a bring-your-own button calls `Relay.openWidget()`). */
  widget?: boolean | WidgetOptions;
  replay?: ReplayOptions;
  capture?: CaptureOptions;
  /** Extra CSS selectors to blank in screenshots and replays, beside the project's privacy rules. */
  mask?: string[];
}

export type ReportType = "bug" | "feedback";
export type Severity = "low" | "med" | "high" | "critical";

export interface ReportInput {
  type: ReportType | "chat" | "survey" | "system";
  text: string;
  title?: string;
  severity?: Severity;
  /** `true` takes a screenshot of the page; a Blob (PNG or JPEG) is sent as it is. */
  screenshot?: boolean | Blob;
}

export interface ConsoleEntry { level: string; message: string; timestamp: string }
export interface NetworkEntry { method: string; url: string; status: number; duration_ms: number; timestamp: string }
export interface ErrorEntry { type: string; message: string; stack?: string; source?: string; timestamp: string }
