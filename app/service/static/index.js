// The service page's forms, sent with fetch() so that the answer shows on the page instead of the API's JSON:
// a study upload opens the job's page; a score shows rounded as the pages round them; a refusal, its reason.
(function () {
  "use strict";

  function reason(body) {
    const error = body && body.error;
    if (!error) return JSON.stringify(body);
    return [error.reason, error.file ? `(file ${error.file})` : ""].filter(Boolean).join(" ");
  }

  function rounded(value, digits) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  function send(form, done) {
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const out = form.querySelector("output");
      out.className = "";
      out.textContent = "uploading…";
      try {
        const response = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" });
        const body = await response.json().catch(() => null);
        if (response.ok) {
          done(body, out);
          return;
        }
        out.className = "error";
        out.textContent = `Refused (${response.status}): ${reason(body)}`;
      } catch (error) {
        out.className = "error";
        out.textContent = `Not sent: ${error.message || error}`;
      }
    });
  }

  send(document.getElementById("study-form"), (job) => {
    window.location.href = `/jobs/${job.id}`;
  });
  send(document.getElementById("score-form"), (record, out) => {
    out.textContent = `${record.study}: Dice ${rounded(record.dice, 3)}, FPV ${rounded(record.false_positive_volume, 2)} ml, ` +
      `FNV ${rounded(record.false_negative_volume, 2)} ml`;
  });
})();
