"""`newsletter serve --sequences`: the same run as `newsletter sequences run`, every minute, inside
the web app, so a welcome leaves within a minute of the confirmation without cron.

Each run is in the thread pool (the database never stalls the event loop); a run that fails
is logged as one redacted line and the loop goes on. `wait` is injectable: tests step it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from starlette.concurrency import run_in_threadpool

from newsletter_mailer.errors import NewsletterError, one_line, redact
from newsletter_mailer.sequences.run import Runner

log = logging.getLogger("newsletter_mailer.sequences")
INTERVAL = 60.0


async def every_minute() -> None:
    await asyncio.sleep(INTERVAL)


async def loop(runner: Runner, wait: Callable[[], Awaitable[None]] = every_minute) -> None:
    while True:
        try:
            report = await run_in_threadpool(runner.run)
            for step in report.steps:
                log.info("sequence %s, step %s: %d sent, %d failed, %d uncertain", step.sequence, step.step,
                         step.sent, step.failed, step.uncertain)
            for exc in report.errors:
                log.error("%s", redact(one_line(exc.format())))
        except NewsletterError as exc:
            log.error("sequences: %s", redact(one_line(exc.format())))
        except Exception as exc:  # a bug must not stop the web app; the next minute tries again
            log.error("sequences: internal error (%s: %s)", type(exc).__name__, redact(one_line(str(exc)[:200])))
        await wait()
