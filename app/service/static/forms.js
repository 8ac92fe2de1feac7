// What the pages' forms share: post a form's data with fetch() and show the answer in its <output>, so that a
// refusal shows its reason (naming the case and file) instead of the API's JSON.
"use strict";

function refusalReason(body) {
  const error = body && body.error;
  if (!error) return JSON.stringify(body);
  return [error.reason, error.file ? `(file ${error.file})` : ""].filter(Boolean).join(" ");
}

// The answer's body when the request succeeded; null after showing why it did not.
async function postForm(form, data, out, pending) {
  out.className = "";
  out.textContent = pending;
  try {
    const response = await fetch(form.action, { method: "POST", body: data, credentials: "same-origin" });
    const body = await response.json().catch(() => null);
    if (response.ok) return body;
    out.className = "error";
    out.textContent = `Refused (${response.status}): ${refusalReason(body)}`;
  } catch (error) {
    out.className = "error";
    out.textContent = `Not sent: ${error.message || error}`;
  }
  return null;
}
