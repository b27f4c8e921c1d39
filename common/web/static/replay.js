// Plays each replay of a page (`div.replay[data-replay-events=URL]`) with the SDK's player (player.js,
// `window.RelayPlayer`, loaded before this script): fetches the replay's events from the page's own origin
// and mounts the player in the element. A static file, as the CSP allows no inline script.
(function () {
  "use strict";
  function play(element) {
    var url = element.getAttribute("data-replay-events");
    if (!url || !window.RelayPlayer) return;
    var stage = document.createElement("div");
    element.appendChild(stage);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (events) { window.RelayPlayer.mount(stage, events); })
      .catch(function () { stage.textContent = "This replay could not be loaded."; });
  }
  document.querySelectorAll("div.replay[data-replay-events]").forEach(play);
})();
