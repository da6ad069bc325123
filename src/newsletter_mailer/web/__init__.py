"""The reader-facing web app of `newsletter serve`: unsubscribe links, double opt-in
sign-up, the SendGrid Event Webhook.

`newsletter_mailer.web:app` (for uvicorn/gunicorn) is the app of web/application.py, made on first
use from the environment (NEWSLETTER_CONFIG, NEWSLETTER_STATE).
"""


def __getattr__(name: str):
    if name == "app":
        from newsletter_mailer.web.application import app

        # Kept on the package, so a second look-up (uvicorn loads the app twice) is the same app.
        # (The module is web/application.py: a submodule named `app` would rebind this name.)
        globals()["app"] = app
        return app
    raise AttributeError(name)
