"""`newsletter compose ISSUE --watch`: the preview page served on 127.0.0.1, rebuilt on every save.

A thread polls the modification times of the issue, the settings, the templates (the user's
folder and the built-in ones) and the issue's local images. On a change the issue is composed
again, the build files are written as a normal compose writes them, and the page in the browser,
which asks `/__version` every 300 ms, reloads itself. A broken edit shows the error on the page
instead of stopping the server; the next good save brings the preview back.
"""

from __future__ import annotations

import html as htmlmod
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from newsletter_mailer.errors import NewsletterError

VERSION_MARK = "__NEWSLETTER_PREVIEW_VERSION__"
MEDIA_PREFIX = "/__media/"
RELOAD_SCRIPT = """<script>
(() => {
  const version = "%s";
  let busy = false;
  setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch("/__version", {cache: "no-store"});
      if (r.ok && (await r.text()).trim() !== version) location.reload();
    } catch (e) { /* the server is restarting or stopped: try again */ }
    busy = false;
  }, 300);
})();
</script>""" % VERSION_MARK


@dataclass
class Build:
    """What one rebuild produced: the page to serve, or the error it shows."""

    page: str
    ok: bool
    message: str
    ms: float
    written: list[Path] = field(default_factory=list)


class Builder:
    """Composes the issue and keeps the latest preview page; knows which files to watch."""

    def __init__(self, issue: Path, config: Path | None = None, out: Path | None = None):
        from newsletter_mailer.schema import slug_of

        self.issue = issue
        self.config = config
        self.out = out
        self.slug = slug_of(issue)
        self.settings = None
        self.settings_dir: Path | None = None
        self.images: dict[str, str] = {}  # URL path under /__media/ -> image path relative to the issue
        self.checks = []

    # --- what to watch -------------------------------------------------------------------

    def watched(self) -> list[Path]:
        from newsletter_mailer.render import builtin_templates

        settings_file = self.config if self.config is not None else Path("newsletter.toml")
        files = [self.issue, settings_file, *(self.issue.parent / rel for rel in self.images.values())]
        folders = [builtin_templates(), settings_file.resolve().parent / "templates"]
        for folder in folders:
            files.append(folder)
            for root, dirs, names in os.walk(folder):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                files.extend(Path(root) / n for n in names if not n.startswith("."))
        return files

    def signature(self) -> tuple:
        sig = []
        for p in self.watched():
            try:
                st = p.stat()
                sig.append((str(p), st.st_mtime_ns, st.st_size))
            except OSError:
                sig.append((str(p), None, None))
        return tuple(sig)

    # --- building ------------------------------------------------------------------------

    def rebuild(self) -> Build:
        t0 = time.perf_counter()
        try:
            page, written, message = self._compose()
            ok = True
        except NewsletterError as exc:
            page, written, message, ok = self._problem(exc.format()), [], exc.format(), False
        except Exception as exc:  # a bug must not stop the server either
            text = f"internal error ({type(exc).__name__}: {str(exc)[:300]})"
            page, written, message, ok = self._problem(text), [], text, False
        return Build(page, ok, message, (time.perf_counter() - t0) * 1000, written)

    def _compose(self) -> tuple[str, list[Path], str]:
        from newsletter_mailer import media
        from newsletter_mailer.checks import run_checks, summary
        from newsletter_mailer.compose import compose_issue, load_issue
        from newsletter_mailer.output import write_build
        from newsletter_mailer.preview import preview_page, previewed
        from newsletter_mailer.settings import load_settings
        from newsletter_mailer.variants import Editions

        self.settings, self.settings_dir = load_settings(self.config, self.issue)
        issue = load_issue(self.issue)
        # Watch the local images even while one is missing, so adding it brings the preview back.
        self.images = {media.relative_url(rel): rel for rel, _ in media.image_files(issue, self.issue)}
        c = compose_issue(issue, self.issue, self.settings, self.settings_dir)
        self.checks = run_checks(c)
        editions = Editions(c, self.settings_dir)  # each variant (for: on sections) some reader could get
        shown = editions.audiences.possible()
        out_dir = self.out if self.out is not None else Path("build") / c.slug
        paths = write_build(c, self.checks, out_dir, self.settings_dir, editions, shown)
        page = preview_page(c, self.checks, self.settings_dir, extra_head=RELOAD_SCRIPT,
                            variants=previewed(editions, shown, None))
        # Local images are not online yet: the preview shows the files themselves.
        for url_path in self.images:
            page = page.replace(self.settings.web_url(c.slug) + url_path, MEDIA_PREFIX + url_path)
        return page, list(paths.values()), summary(self.checks)

    def _problem(self, message: str) -> str:
        if self.settings is not None:
            from newsletter_mailer.preview import problem_page

            try:
                return problem_page(self.settings, self.slug, message, self.settings_dir, extra_head=RELOAD_SCRIPT)
            except Exception:  # e.g. the user's own preview template is the broken file
                pass
        return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Preview: error</title>"
                "</head><body style=\"font-family:system-ui,sans-serif;margin:0\">"
                f"<header style=\"padding:16px 24px\"><h1 style=\"font-size:18px\">{htmlmod.escape(self.slug)}</h1>"
                "<div class=\"problem\" id=\"problem\" style=\"background:#fde8ea;color:#b00020;padding:16px 24px;"
                f"font-family:monospace;white-space:pre-wrap\">{htmlmod.escape(message)}</div></header>"
                f"{RELOAD_SCRIPT}</body></html>")


class PreviewServer:
    """The HTTP server and the polling thread. start() and stop(); serve() runs until Ctrl-C."""

    def __init__(self, issue: Path, config: Path | None = None, out: Path | None = None, *,
                 host: str = "127.0.0.1", port: int = 8000, poll_interval: float = 0.1,
                 echo: Callable[[str], None] = print):
        self.builder = Builder(issue, config, out)
        self.poll_interval = poll_interval
        self.echo = echo
        self._lock = threading.Lock()
        self._page = ""
        self._page_template: str | None = None  # the page before the version is filled in
        self._version = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        try:
            self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        except OSError as exc:
            hint = "pass --port N, or --port 0 for a free one" if exc.errno in (98, 48, 10048) else None
            raise NewsletterError(f"cannot listen on {host}:{port}: {exc.strerror}", hint=hint) from None
        self.httpd.daemon_threads = True

    @property
    def hosts(self) -> frozenset[str]:
        """The Host headers a page on this server can send: a DNS-rebound name is none of them."""
        host, port = self.httpd.server_address[:2]
        names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
        return frozenset({f"{n}:{port}" for n in names} | (names if port == 80 else set()))

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def page(self) -> tuple[str, int]:
        with self._lock:
            return self._page, self._version

    def build(self) -> Build:
        """Rebuild now; the page's version changes only when the page itself does."""
        b = self.builder.rebuild()
        with self._lock:
            if b.page != self._page_template:
                self._page_template = b.page
                self._version += 1
                self._page = b.page.replace(VERSION_MARK, str(self._version))
        return b

    def _report(self, b: Build) -> None:
        if b.ok:
            self.echo(f"rebuilt in {b.ms:.0f} ms: {b.message}")
        else:
            self.echo(f"error: {b.message}")

    def _poll(self) -> None:
        last = self._baseline
        while not self._stop.wait(self.poll_interval):
            sig = self.builder.signature()
            if sig == last:
                continue
            # Editors may write a file in steps: wait until it stays the same for a moment.
            for _ in range(10):
                if self._stop.wait(0.02):
                    return
                again = self.builder.signature()
                if again == sig:
                    break
                sig = again
            # What was built from; a save during the build is seen next round. (When the build
            # adds files to watch, e.g. local images, that round rebuilds once more, harmlessly.)
            last = sig
            self._report(self.build())

    def start(self) -> Build:
        self._baseline = self.builder.signature()  # before building: an edit meanwhile is not lost
        first = self.build()
        for name, target in (("http", lambda: self.httpd.serve_forever(poll_interval=0.1)), ("poll", self._poll)):
            t = threading.Thread(target=target, daemon=True, name=f"newsletter-watch-{name}")
            t.start()
            self._threads.append(t)
        return first

    def stop(self) -> None:
        self._stop.set()
        if self._threads:  # shutdown() waits for serve_forever(), so only once it was started
            self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def serve(self, open_browser: bool = False) -> None:
        try:
            first = self.start()
            self.echo(f"previewing {self.builder.issue} at {self.url} (Ctrl-C to stop)")
            self._report(first)
            if open_browser:
                import webbrowser

                webbrowser.open(self.url)
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
        self.echo("stopped")


def _handler(server: PreviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "newsletter-preview"

        def log_message(self, format, *args):  # the page asks every 300 ms: keep the terminal quiet
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            if (self.headers.get("Host") or "").strip().lower() not in server.hosts:
                self._send(421, b"", "text/plain; charset=utf-8")  # a page from another site, rebound
                return
            path = urlsplit(self.path).path
            if path in ("/", "/index.html"):
                page, _ = server.page()
                self._send(200, page.encode("utf-8"), "text/html; charset=utf-8")
            elif path == "/__version":
                self._send(200, str(server.version).encode(), "text/plain; charset=utf-8")
            elif path.startswith(MEDIA_PREFIX) and path[len(MEDIA_PREFIX):] in server.builder.images:
                import mimetypes

                from newsletter_mailer.media import read_image

                file = Path(server.builder.images[path[len(MEDIA_PREFIX):]])
                try:  # only a file whose real path is inside the issue's folder, never through a link out
                    body = read_image(server.builder.issue, file)
                except NewsletterError:
                    self._send(404, b"not found", "text/plain; charset=utf-8")
                    return
                ctype = mimetypes.guess_type(unquote(file.name))[0] or "application/octet-stream"
                self._send(200, body, ctype)
            else:
                self._send(404, b"not found", "text/plain; charset=utf-8")

        do_HEAD = do_GET

    return Handler


def serve(issue: Path, config: Path | None, out: Path | None, port: int, open_browser: bool,
          echo: Callable[[str], None] = print) -> None:
    if not issue.is_file():  # a typo in the path: say so now rather than serve an error page
        raise NewsletterError("file not found" if not issue.exists() else "is not a file", path=issue,
                              hint="check the path")
    PreviewServer(issue, config, out, port=port, echo=echo).serve(open_browser)
