// The widget's CSS, injected into its shadow root: the page's styles cannot reach in (only inherited
// properties could, and `all: initial` cuts those), and these cannot leak out. The host's own box is
// declared !important: inside a shadow tree, important rules win over the page's. `color-scheme` is
// !important too, or `all:initial!important` would reset it and native controls (radios, the file button)
// would stay light in the dark theme.
export const CSS = `
:host{all:initial!important;display:block!important;position:fixed!important;z-index:2147483000!important;
bottom:20px!important;right:20px!important;top:auto!important;left:auto!important;visibility:visible!important;
opacity:1!important;transform:none!important;pointer-events:auto!important;width:auto!important;height:auto!important;
--bg:#fff;--fg:#111827;--muted:#4b5563;--line:#d1d5db;--accent:#2563eb;--on:#fff;--field:#fff;
color-scheme:light!important;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif!important;color:var(--fg)!important}
:host([placement=bottom-left]){left:20px!important;right:auto!important}
:host([placement=top-right]){top:20px!important;bottom:auto!important}
:host([placement=top-left]){top:20px!important;bottom:auto!important;left:20px!important;right:auto!important}
:host([theme=dark]){color-scheme:dark!important;--bg:#111827;--fg:#f9fafb;--muted:#9ca3af;--line:#374151;--accent:#60a5fa;--on:#111827;--field:#1f2937}
@media (prefers-color-scheme:dark){:host([theme=auto]){color-scheme:dark!important;--bg:#111827;--fg:#f9fafb;--muted:#9ca3af;--line:#374151;
--accent:#60a5fa;--on:#111827;--field:#1f2937}}
*{box-sizing:border-box;font:inherit;color:inherit;margin:0}
[hidden]{display:none!important}
button,::file-selector-button{cursor:pointer;border:1px solid var(--line);background:var(--field);color:var(--fg);
border-radius:8px;padding:6px 12px}
::file-selector-button{margin-right:8px}
button:focus-visible,input:focus-visible,textarea:focus-visible,select:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.launcher{background:var(--accent);color:var(--on);border:0;border-radius:999px;padding:10px 18px;font-weight:600;
box-shadow:0 4px 14px rgba(0,0,0,.25)}
.dialog{position:fixed;bottom:76px;right:20px;width:min(380px,calc(100vw - 24px));max-height:calc(100vh - 100px);
overflow:auto;background:var(--bg);color:var(--fg);border:1px solid var(--line);border-radius:12px;padding:16px;
box-shadow:0 12px 40px rgba(0,0,0,.3);display:flex;flex-direction:column;gap:10px}
:host([placement$=left]) .dialog{left:20px;right:auto}
:host([placement^=top]) .dialog{top:76px;bottom:auto}
@media (max-width:480px){.dialog{left:12px!important;right:12px!important;width:auto;bottom:70px}}
header{display:flex;justify-content:space-between;align-items:center}
h2{font-size:17px;font-weight:700}
nav{display:flex;gap:6px;flex-wrap:wrap}
nav button[aria-pressed=true]{background:var(--accent);color:var(--on);border-color:var(--accent)}
form,.panel{display:flex;flex-direction:column;gap:8px}
label{font-weight:600}
.row{display:flex;gap:8px;align-items:center;font-weight:400}
textarea,input[type=text],select{width:100%;border:1px solid var(--line);border-radius:8px;padding:8px;background:var(--field)}
textarea{min-height:96px;resize:vertical}
.actions{display:flex;gap:8px;justify-content:flex-end;align-items:center}
.send{background:var(--accent);color:var(--on);border:0;font-weight:600;padding:8px 16px;align-self:flex-end}
.status,.hint{color:var(--muted);font-size:13px}
.thanks{font-size:20px;font-weight:700}
ul{list-style:none;padding:0;display:flex;flex-direction:column;gap:6px}
li{border:1px solid var(--line);border-radius:8px;padding:8px;display:flex;justify-content:space-between;gap:8px}
.close{border:0;background:transparent;font-size:20px;line-height:1;padding:2px 8px}
`;
