"""mjml-python compiles MJML to responsive HTML (step 3); MRML, written in Rust."""

from __future__ import annotations

from newsletter_mailer.errors import NewsletterError


def compile_mjml(source: str, template: str) -> str:
    from mjml import mjml2html

    try:
        return mjml2html(source, disable_comments=True)
    except ValueError as exc:
        raise NewsletterError(f"MJML error: {exc}", path=template,
                              hint="check the template's MJML tags") from None
