"""The reader-facing web app of `newsletter serve`: unsubscribe links, double opt-in
sign-up, the SendGrid Event Webhook.

`newsletter_mailer.web:app` (for uvicorn/gunicorn) is the app of web/app.py, made on first
use from the environment (NEWSLETTER_CONFIG, NEWSLETTER_STATE).
"""


def __getattr__(name: str):
    if name == "app":
        from newsletter_mailer.web.app import app

        # Importing the submodule web/app.py set this package's `app` to that module: the
        # Starlette app replaces it, so a second look-up (uvicorn loads the app twice) finds it.
        globals()["app"] = app
        return app
    raise AttributeError(name)
