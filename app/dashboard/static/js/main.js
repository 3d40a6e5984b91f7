// The dashboard's entry: a hash router (#/jobs, #/jobs/<id>, #/submit, #/compare) and sign-in.
// Each view is mount(root, params) -> cleanup, so leaving a page stops its polling.

import { auth, onUnauthorized } from "./api.js";
import { mountSignIn } from "./signin.js";
import { mountJobs } from "./jobs.js";
import { mountJob } from "./job.js";
import { mountSubmit } from "./submit.js";
import { mountCompare } from "./compare.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
let cleanup = null;

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/jobs";
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query) };
}

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  view.replaceChildren();
  if (!auth.key()) {
    nav.hidden = true;
    cleanup = mountSignIn(view, () => route());
    return;
  }
  nav.hidden = false;
  const { parts, query } = parseHash();
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("active", link.getAttribute("href") === `#/${parts[0] || "jobs"}`);
  }
  if (parts[0] === "jobs" && parts[1]) cleanup = mountJob(view, parts[1]);
  else if (parts[0] === "submit") cleanup = mountSubmit(view);
  else if (parts[0] === "compare") cleanup = mountCompare(view, query);
  else cleanup = mountJobs(view, query);
}

document.getElementById("sign-out").addEventListener("click", () => {
  auth.signOut();
  route();
});
onUnauthorized(() => {
  auth.signOut();
  route();
});
window.addEventListener("hashchange", route);
route();
