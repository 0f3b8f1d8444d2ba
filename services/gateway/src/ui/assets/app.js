// hookmesh dashboard: the few live parts. Everything else is plain HTML.
"use strict";

// Times arrive in UTC; show them in the viewer's zone, with UTC on hover.
function localizeTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (isNaN(at)) continue;
    el.title = at.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    el.textContent = at.toLocaleString();
  }
}

// A job's page follows its events (Server-Sent Events) until it finishes,
// then draws its results in place, without a reload.
function followJob(section) {
  const id = section.dataset.job;
  const status = document.getElementById("status");
  const message = document.getElementById("message");
  const progress = document.getElementById("progress");
  const source = new EventSource("/ui/pipelines/" + encodeURIComponent(id) + "/events");
  const refresh = () =>
    fetch("/ui/pipelines/" + encodeURIComponent(id) + "/results", { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
      .then((html) => {
        const old = document.getElementById("results");
        const box = document.createElement("div");
        box.innerHTML = html;
        const fresh = box.firstElementChild;
        old.replaceWith(fresh);
        localizeTimes(fresh);
        section.dataset.final = "true";
      });
  const onEvent = (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch (_) { return; }
    if (data.status) {
      status.textContent = data.status;
      status.className = "status status-" + data.status;
    }
    if (typeof data.percent === "number") progress.value = data.percent;
    if (data.message) message.textContent = data.message;
    if (data.done) {
      progress.value = 100;
      source.close();
      refresh();
    }
  };
  for (const name of ["queued", "running", "progress", "completed", "failed"]) {
    source.addEventListener(name, onEvent);
  }
}

// The tail view asks for the newest messages every second.
function followTail(table) {
  const body = table.querySelector("tbody");
  const status = document.getElementById("tail-status");
  const tick = () => {
    if (document.getElementById("tail-live") && !document.getElementById("tail-live").checked) return;
    fetch("/ui/tail/rows" + window.location.search, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
      .then((html) => {
        body.innerHTML = html;
        localizeTimes(body);
        if (status) status.textContent = "Updated " + new Date().toLocaleTimeString();
      })
      .catch(() => { if (status) status.textContent = "Cannot update right now."; });
  };
  setInterval(tick, 1000);
}

// "Select all" boxes of the dead-letter list.
function selectAll(box) {
  box.addEventListener("change", () => {
    for (const item of document.querySelectorAll("input[name=sequence]")) item.checked = box.checked;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localizeTimes(document);
  const job = document.getElementById("job");
  if (job && job.dataset.final !== "true") followJob(job);
  const tail = document.getElementById("tail");
  if (tail) followTail(tail);
  const all = document.getElementById("select-all");
  if (all) selectAll(all);
});
