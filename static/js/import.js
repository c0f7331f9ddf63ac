// Gallery: a bundle import shows the replay's progress (the server streams NDJSON lines
// {"progress", "total"} while it verifies the path, then {"url"} or {"error"}).
const form = document.querySelector("form#bundle-import");
if (form) {
  const out = form.querySelector(".progress");
  const bar = form.querySelector("progress");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    out.textContent = "uploading…";
    bar.hidden = false;
    bar.removeAttribute("value");
    try {
      const res = await fetch(form.action, { method: "POST", body: new FormData(form), headers: { Accept: "application/x-ndjson" }, credentials: "same-origin" });
      if (!res.ok && !(res.headers.get("Content-Type") || "").includes("ndjson")) {
        const data = await res.json().catch(() => ({}));
        throw new Error(data.message || `${res.status} ${res.statusText}`);
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const msg = JSON.parse(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          if (msg.progress !== undefined) {
            bar.max = msg.total || 1;
            bar.value = msg.progress;
            out.textContent = `replaying and verifying: ${msg.progress.toLocaleString()} of ${msg.total.toLocaleString()} decisions`;
          } else if (msg.url) {
            out.textContent = "verified: opening the session…";
            location.href = msg.url;
            return;
          } else if (msg.error) {
            throw new Error(msg.error);
          }
        }
      }
      throw new Error("the server closed the answer without a session");
    } catch (err) {
      out.textContent = err.message;
      out.classList.add("error");
      bar.hidden = true;
      button.disabled = false;
    }
  });
}
