// A clip plays only its own range: [data-start, data-end] of the source (or 0..duration of a preview).
function bindRange(v) {
  const start = parseFloat(v.dataset.start), end = parseFloat(v.dataset.end);
  v.addEventListener("loadedmetadata", () => { if (v.currentTime < start || v.currentTime > end) v.currentTime = start; });
  v.addEventListener("timeupdate", () => { if (v.currentTime >= end) { v.currentTime = start; } });
}
// a grid page sent before its filter was counted: fetch the count, facets and pager, and swap them in
async function fillSummary(facets) {
  for (let i = 0; i < 600; i++) {
    const r = await fetch("/grid/summary" + location.search, { credentials: "same-origin" });
    if (r.status === 202) { await new Promise(ok => setTimeout(ok, 250)); continue; }
    if (!r.ok) {
      const p = document.createElement("p");
      p.className = "error"; p.id = "summary-error"; p.textContent = "counting failed: " + (await r.text());
      facets.prepend(p);
      return;
    }
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    for (const id of ["facets", "count", "pages"]) {
      const fresh = doc.getElementById(id), old = document.getElementById(id);
      if (fresh && old) old.replaceWith(fresh);
    }
    return;
  }
}
document.addEventListener("DOMContentLoaded", () => {
  const facets = document.querySelector("#facets[data-pending]");
  if (facets) fillSummary(facets);
  const player = document.getElementById("player");
  if (player) bindRange(player);
  // grid: hovering a card plays the clip in place of its keyframe
  document.querySelectorAll(".card").forEach(card => {
    const img = card.querySelector("img.thumb");
    let video = null;
    card.addEventListener("mouseenter", () => {
      if (!video) {
        video = document.createElement("video");
        video.muted = true; video.playsInline = true; video.className = "hover-video";
        const direct = card.dataset.direct === "1";
        const s = parseFloat(card.dataset.start), e = parseFloat(card.dataset.end);
        video.dataset.start = direct ? s : 0; video.dataset.end = direct ? e : (e - s);
        video.src = "/media/clip/" + card.dataset.clip;
        bindRange(video);
      }
      img.replaceWith(video);
      video.play().catch(() => {});
    });
    card.addEventListener("mouseleave", () => { if (video) { video.pause(); video.replaceWith(img); } });
  });
  // curation forms post in the background, then show the new state (getAttribute: the form has
  // an input named "action", which shadows form.action)
  document.querySelectorAll("form#curate, form#edit").forEach(f => {
    f.addEventListener("submit", async ev => {
      ev.preventDefault();
      const data = new FormData(f);
      if (ev.submitter && ev.submitter.name) data.set(ev.submitter.name, ev.submitter.value);
      // writes carry the per-launch secret in a custom header: a cross-site form cannot set one
      const meta = document.querySelector('meta[name="de-token"]');
      const headers = { "Accept": "application/json" };
      if (meta) headers["X-DE-Token"] = meta.content;
      const r = await fetch(f.getAttribute("action"), { method: "POST", body: data, headers, credentials: "same-origin" });
      if (r.ok) location.reload(); else alert("not saved: " + (await r.json()).error);
    });
  });
});
