// skewless console: live progress of materialization jobs.
// Every element with data-job-id and data-live="true" is refreshed from
// /api/jobs/<id> until its job is SUCCEEDED or FAILED. Pages work without this script.
"use strict";
(function () {
  var INTERVAL_MS = 500;
  var RETRY_MS = 2000;

  function set(el, field, text) {
    var nodes = el.querySelectorAll('[data-field="' + field + '"]');
    for (var i = 0; i < nodes.length; i++) nodes[i].textContent = text;
  }

  function update(el, job) {
    var states = el.querySelectorAll('[data-field="state"]');
    for (var i = 0; i < states.length; i++) {
      states[i].textContent = job.state;
      states[i].className = "state state-" + job.state;
    }
    var bars = el.querySelectorAll('progress[data-field="progress"]');
    var percent = Math.round(job.progress * 100) + "%";
    for (var j = 0; j < bars.length; j++) {
      bars[j].value = job.progress;
      bars[j].textContent = percent;
    }
    set(el, "percent", percent);
    set(el, "rows_read", String(job.rows_read));
    set(el, "rows_written", String(job.rows_written));
    set(el, "update_time", job.update_time);
    set(el, "error", job.error || "none");
    var errors = el.querySelectorAll('[data-field="error"]');
    for (var k = 0; k < errors.length; k++) errors[k].classList.toggle("job-error", !!job.error);
    if (job.terminal) {
      el.setAttribute("data-live", "false");
      set(el, "live-note", "");
    }
  }

  function follow(el) {
    var id = el.getAttribute("data-job-id");
    function poll() {
      fetch("/api/jobs/" + encodeURIComponent(id), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      })
        .then(function (response) {
          return response.json().then(function (body) {
            return { ok: response.ok, body: body };
          });
        })
        .then(function (result) {
          if (!result.ok) {
            set(el, "live-note", result.body.code + ": " + result.body.message);
            return;
          }
          update(el, result.body);
          if (!result.body.terminal) setTimeout(poll, INTERVAL_MS);
        })
        .catch(function () {
          setTimeout(poll, RETRY_MS);
        });
    }
    setTimeout(poll, INTERVAL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll('[data-job-id][data-live="true"]');
    for (var i = 0; i < live.length; i++) follow(live[i]);
  });
})();
