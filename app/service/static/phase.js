// The phase page's submission form: sent with fetch() so that the answer shows on the page (a refusal's
// reason, naming the case and file) instead of the API's JSON; a scored submission reloads the page.
(function () {
  "use strict";
  const form = document.getElementById("submission-form");
  if (!form) return;
  const out = document.getElementById("submission-result");

  function reason(body) {
    const error = body && body.error;
    if (!error) return JSON.stringify(body);
    return [error.reason, error.file ? `(file ${error.file})` : ""].filter(Boolean).join(" ");
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    for (const [name, value] of Array.from(data.entries())) {
      if (value instanceof File && value.size === 0 && !value.name) data.delete(name); // inputs left empty
    }
    out.className = "";
    out.textContent = "uploading and scoring…";
    form.querySelector("button[type=submit]").disabled = true;
    try {
      const response = await fetch(form.action, { method: "POST", body: data, credentials: "same-origin" });
      const body = await response.json().catch(() => null);
      if (response.ok) {
        out.textContent = `Submission ${body.state}; reloading…`;
        window.location.reload();
        return;
      }
      out.className = "error";
      out.textContent = `Refused (${response.status}): ${reason(body)}`;
    } catch (error) {
      out.className = "error";
      out.textContent = `Not sent: ${error.message || error}`;
    }
    form.querySelector("button[type=submit]").disabled = false;
  });
})();
