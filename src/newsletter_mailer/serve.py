"""`newsletter serve`: the web app on uvicorn, one process (run more behind a proxy if needed).

Behind a reverse proxy (TLS) the client address comes from X-Forwarded-For, trusted only
from FORWARDED_ALLOW_IPS (default: the proxy on this host), so the sign-up rate limit
counts readers, not the proxy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import uvicorn

from newsletter_mailer.web import create_app
from newsletter_mailer.webpages import redact_access_log


def run(host: str, port: int, config: Path | None, state: Path | None, env: Mapping[str, str]) -> None:
    app = create_app(config, state, env)
    server_config = uvicorn.Config(
        app, host=host, port=port, proxy_headers=True,
        forwarded_allow_ips=env.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        server_header=False, timeout_keep_alive=5, log_level="info")
    redact_access_log()  # again: uvicorn's logging setup above must not have dropped it
    uvicorn.Server(server_config).run()
