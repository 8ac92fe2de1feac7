// Without this the forms post to the API and show its JSON; with it, a study upload opens the job's page.
function send(form, done) {
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var out = form.querySelector("output");
    out.textContent = "uploading…";
    fetch(form.action, {method: "POST", body: new FormData(form), credentials: "same-origin"})
      .then(function (r) { return r.json().then(function (body) { return {ok: r.ok, body: body}; }); })
      .then(function (r) { if (r.ok) { done(r.body, out); } else { out.textContent = "error: " + (r.body.detail || JSON.stringify(r.body)); } })
      .catch(function (e) { out.textContent = "error: " + e; });
  });
}
send(document.getElementById("study-form"), function (job) { window.location.href = "/jobs/" + job.id; });
send(document.getElementById("score-form"), function (record, out) {
  out.textContent = "Dice " + record.dice + ", FPV " + record.false_positive_volume + " ml, FNV " + record.false_negative_volume + " ml";
});
