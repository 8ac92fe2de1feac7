// The phase page's submission form (posted by forms.js): a refusal shows its reason, naming the case and file;
// a scored submission reloads the page.
(function () {
  "use strict";
  const form = document.getElementById("submission-form");
  if (!form) return;
  const out = document.getElementById("submission-result");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    for (const [name, value] of Array.from(data.entries())) {
      if (value instanceof File && value.size === 0 && !value.name) data.delete(name); // inputs left empty
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const body = await postForm(form, data, out, "uploading and scoring…");
    if (body !== null) {
      out.textContent = `Submission ${body.state}; reloading…`;
      window.location.reload();
      return;
    }
    button.disabled = false;
  });
})();
