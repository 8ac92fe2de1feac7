// The service page's forms (posted by forms.js): a study upload opens the job's page; a score shows rounded as
// the pages round them; a refusal, its reason.
(function () {
  "use strict";

  function rounded(value, digits) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  function send(form, done) {
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const out = form.querySelector("output");
      const body = await postForm(form, new FormData(form), out, "uploading…");
      if (body !== null) done(body, out);
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
