// stateward ui: refreshes a page while its run is running (vendored, no dependencies).
// Every 2 seconds the page is fetched again and <main id="live"> replaced, unless the
// user is typing in a form on it; it stops once the run has ended (data-live="0").
(function () {
  "use strict";
  const PERIOD_MS = 2000;
  function busy(main) {
    const active = document.activeElement;
    return active !== null && main.contains(active) && active.closest("form") !== null;
  }
  async function refresh() {
    const main = document.getElementById("live");
    if (main === null || main.dataset.live !== "1") return;
    if (!busy(main)) {
      try {
        const response = await fetch(window.location.href, { credentials: "same-origin" });
        if (response.ok) {
          const page = new DOMParser().parseFromString(await response.text(), "text/html");
          const fresh = page.getElementById("live");
          if (fresh !== null) {
            main.innerHTML = fresh.innerHTML;
            main.dataset.live = fresh.dataset.live;
          }
        }
      } catch (error) {
        // The server may be restarting; try again at the next tick.
      }
    }
    window.setTimeout(refresh, PERIOD_MS);
  }
  window.setTimeout(refresh, PERIOD_MS);
})();
