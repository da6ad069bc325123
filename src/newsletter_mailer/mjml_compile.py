"""mjml-python compiles MJML to responsive HTML (step 3); MRML, written in Rust.

Its output is brought in line with official MJML 5 where MRML differs: MRML writes an
mj-button's `vertical-align` as an attribute of the outer <td>, which is no HTML attribute
(a Nu checker error per button) and which official MJML does not write.
"""

from __future__ import annotations

import re

from newsletter_mailer.errors import NewsletterError

_TD_VERTICAL_ALIGN = re.compile(r'(<td\b[^>]*?) vertical-align="[^"]*"')


def compile_mjml(source: str, template: str) -> str:
    from mjml import mjml2html

    try:
        html = mjml2html(source, disable_comments=True)
    except ValueError as exc:
        raise NewsletterError(f"MJML error: {exc}", path=template,
                              hint="check the template's MJML tags") from None
    return _TD_VERTICAL_ALIGN.sub(r"\1", html)
