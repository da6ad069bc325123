"""`newsletter init`: a new newsletter folder to start from. Never overwrites a file."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from newsletter_mailer import files
from newsletter_mailer.errors import NewsletterError

SCHEMA_FILE = "newsletter.schema.json"

SETTINGS = f"""\
#:schema ./{SCHEMA_FILE}
# (That line lets editors that read JSON Schema for TOML, such as Taplo or VS Code's Even Better TOML,
# complete and check this file; after an upgrade, refresh it with
# `newsletter schema --settings --out newsletter.schema.json`.)
# Settings of this newsletter. Issues are YAML files in issues/; `newsletter compose issues/<file>.yaml`
# builds one, `newsletter publish` builds the web archive, `newsletter send` mails it.
# Every address below is a placeholder at example.org: replace them with your own.

# The newsletter's name: the header of each issue, the footer and the archive page.
name = "My Newsletter"
# The sender address; your mail provider must allow you to send from it.
from_email = "newsletter@example.org"
# The sender name shown in inboxes (optional; the name above if left out).
from_name = "My Newsletter"
# Where replies go (optional).
reply_to = "editor@example.org"
# Where the published site lives: each issue's web copy is <web_base_url>/<issue file name>/,
# the target of the "View this email in your browser" link.
web_base_url = "https://example.org/newsletter"
# Your postal address, shown in every footer as bulk-mail law expects.
postal_address = "My Organisation, 1 Example Street, Example Town EX1 1AA"
# Where `newsletter test-send` sends when no --to is given (optional).
test_recipient = "editor@example.org"
# The language of the issues, a tag like en, en-GB or fr.
language = "en"
# Each reader's unsubscribe link is <[web] base_url>/u/<token>, served by `newsletter serve` (below).
# Only for your own unsubscribe page instead: {{{{ token }}}} is an HMAC of the address keyed by
# NEWSLETTER_SECRET ({{{{ email }}}} would show the address in the link: spam score, proxy logs), and
# unsubscribe_one_click = true if that page honours RFC 8058 one-click POSTs.
# unsubscribe_url = "https://example.org/unsubscribe?email={{{{ email }}}}&token={{{{ token }}}}"
# An address readers may email to unsubscribe, offered in the List-Unsubscribe header (optional).
unsubscribe_mailto = "unsubscribe@example.org"
# The List-Id header (optional; made from the name and the sender's domain if left out).
# list_id = "My Newsletter <my-newsletter.example.org>"
# The time zone of `newsletter send --at` times (optional; this machine's zone if left out).
# timezone = "Europe/London"
# Links in every footer, like your website or social profiles (optional): a label and an
# http(s) or mailto url each.
# footer_links = [{{ label = "Website", url = "https://example.org/" }}]

[brand]
# Colours, written #rrggbb: the header band and headings,
primary_color = "#4a2a7a"
# highlights,
accent_color = "#c0392b"
# the page behind the email,
background_color = "#f2f0f5"
# body text,
text_color = "#222222"
# and links.
link_color = "#1a5fa8"
# The fonts, first choice first (letters, digits, spaces, commas, quotes and hyphens only).
font_family = "Helvetica, Arial, sans-serif"
# A logo above the title (optional): an https address and its alternative text.
# logo_url = "https://example.org/logo.png"
# logo_alt = "My Organisation"

# Dark mode (Apple Mail, iOS Mail, Outlook.com): colours for readers who chose it. Each one left out
# is derived from the colours above, lightened until it reads (WCAG AA), so most newsletters set none.
[brand.dark]
# background = "#0e0914"
# surface = "#221c2a"
# text = "#e6e4ea"
# link = "#8fb4e6"
# heading = "#b9a6d6"
# primary = "#4a2a7a"

[delivery]
# How `newsletter send` delivers: outbox writes .eml files to ./outbox (nothing leaves your machine),
# smtp sends through a mail server, sendgrid through the SendGrid API.
provider = "outbox"
# Messages per second (0.01 to 10000), to stay under a provider's limit (optional; 0 or left out:
# as fast as allowed).
# rate = 5
# A send stops after this many failures in a row (a wrong password should not fail the whole list).
max_consecutive_failures = 10
# Accept intranet addresses (user@localhost, single-label names, .test, .internal, .local) in the
# list, for a private relay; public lists leave this off, as those cannot be delivered.
# allow_local_domains = false
# Where bounces go (SMTP and outbox; SendGrid uses its own): the envelope sender, MAIL FROM.
# Default: from_email. Ask your mail server to deliver bounces+anything@ to this mailbox.
# return_path = "bounces@example.org"
# With verp, each reader's messages go out as bounces+<token>@…, so every bounce names its reader
# (`newsletter inbox` reads them). Needs return_path with the local part "bounces".
# verp = false
# Sign each SMTP and outbox message with DKIM (Gmail and Yahoo want it): `newsletter dkim keygen
# --selector nl1` writes a key and prints the DNS record; the key from DKIM_PRIVATE_KEY or key_file
# (mode 0600). `newsletter doctor` checks the published record. SendGrid signs for itself.
# dkim = {{ domain = "example.org", selector = "nl1", key_file = "dkim-nl1.pem" }}

[delivery.smtp]
# The mail server; the password is read only from the SMTP_PASSWORD environment variable.
# host = "smtp.example.org"
# port = 587
# username = "newsletter@example.org"
# none, starttls or ssl
security = "starttls"
# Seconds to wait for the server.
timeout = 30.0
# Your organisation's own CA (a PEM file), trusted as well as the system's (or SMTP_CA_FILE).
# ca_file = "/etc/ssl/our-ca.pem"
# Send the password in clear text (security "none") to a server other than this machine: only
# on a network you trust (or SMTP_ALLOW_INSECURE_AUTH=1).
# allow_insecure_auth = false
# Connections used at once (1 to 16, or SMTP_CONNECTIONS): for a relay over the internet, where
# each message waits on round trips. A relay that refuses more (421) gets fewer, said once.
# connections = 1

[delivery.sendgrid]
# Labels for SendGrid's statistics (up to 9).
categories = ["newsletter"]
# A SendGrid unsubscribe group: its own unsubscribe link is then used (optional).
# asm_group_id = 12345
# Seconds to wait for the API.
timeout = 30.0

[delivery.sendgrid.tracking]
# SendGrid's click tracking sends links through SendGrid (off: links stay as written).
click = false
# SendGrid's open tracking adds a tracking pixel (off: none).
open = false

[web]
# `newsletter serve`: one-click unsubscribe and sign-up pages. The public https address it is reached at
# (behind your reverse proxy); unsubscribe links point there.
base_url = "https://news.example.org"
# Hours a sign-up's confirmation link works.
confirm_hours = 48
# The consent line readers tick on the sign-up form.
consent = "Yes, email me this newsletter. I can unsubscribe at any time with the link in every issue."
# Confirmation emails one inbox may receive per hour (the form cannot be used to flood an inbox;
# name+tag@ and Gmail's dotted spellings count as one inbox),
signup_per_hour_address = 3
# sign-ups one client (an IPv4 address, an IPv6 /64) may make per hour,
signup_per_hour_client = 20
# and sign-ups from everyone per hour, after which the form says "try again later".
signup_per_hour_total = 200
# Reverse proxies (addresses or networks) whose X-Forwarded-For names the client; none: the
# connecting address is the client.
trusted_proxies = []

[bounces]
# `newsletter inbox` (SMTP senders): temporary failures (mailbox full, 4.x.x) on this many different
# issues mark an address bounced; one permanent failure (5.x.x) always does.
soft_limit = 3

[checks]
# Warnings of `newsletter check` that count as errors (and stop a send): true for all, or a list of
# size, unsubscribe, inbox, contrast, headings, link-text, alt-text, all-caps, image-only, local-image, placeholder.
warnings_as_errors = false

[state]
# The ledger and the audience store in PostgreSQL instead of SQLite files in .newsletter/ (for a
# team: senders and `newsletter serve` on different machines); NEWSLETTER_DATABASE_URL wins. No
# password here: PGPASSWORD or ~/.pgpass. Then `newsletter state init`.
# database_url = "postgresql://news@db.example.org/newsletter"
"""

ISSUE = """\
# Your first issue. Edit it and watch the preview: newsletter compose {path} --watch
# Text fields may use merge fields such as {{{{ name }}}} or {{{{ name | default("there") }}}};
# body and intro are Markdown. `newsletter schema` prints the whole format.
subject: "Welcome to {name}"
preheader: "What this newsletter is about, and what comes next"
date: {date}
# draft: true            # leaves the issue out of `newsletter publish` (unless --drafts)
intro: |
  Hello {{{{ name | default("there") }}}}, and welcome to the first issue of {name}.

sections:
  - heading: "What to expect"
    body: |
      Each issue brings a few short stories with links to read more.
      Write the text in **Markdown**: *emphasis*, lists and [links](https://example.org/) all work.

      - news from the team
      - events coming up
      - resources worth reading
    links:
      - label: "Read more"
        text: "About this newsletter"
        url: "https://example.org/about"

  - heading: "Adding an image"
    body: |
      A section may have an image: an https address, or a file next to this issue (like
      `images/photo.png`), which `newsletter publish` copies into the site. It goes above the
      text at full width; `layout: image-left` or `image-right` puts it beside the text.
    # image:
    #   src: images/photo.png
    #   alt: "What the image shows, for readers who cannot see it"
    # layout: image-top    # the default with an image; or image-left, image-right
"""

SEQUENCE = """\
# The welcome sequence: what a reader gets after confirming a sign-up, step by step, each once.
# `newsletter check sequences/welcome.yaml` checks every step; `newsletter sequences run` (cron,
# every minute) or `newsletter serve --sequences` sends them. Restart serve after editing this file.
start: confirmed          # confirmed (a sign-up confirmed) | imported (audience import --start-sequence) | manual
# min_gap: 1d             # at least this long between two steps to one reader
steps:
  - issue: sequences/welcome/1-hello.yaml     # after: 0 — right after the start
  # - issue: sequences/welcome/2-how-to-help.yaml
  #   after: 3d
"""

WELCOME = """\
# Step 1 of the welcome sequence (sequences/welcome.yaml): an issue like any other.
# Readers in a sequence have an address and a name: give every merge field a default.
subject: "Welcome to {name}"
preheader: "Thank you for signing up: what comes next"
date: {date}
draft: true              # not a public issue: `newsletter publish` leaves it out
intro: |
  Hello {{{{ name | default("there") }}}}, thank you for confirming your subscription to {name}.

sections:
  - heading: "What comes next"
    body: |
      An issue arrives every month, with a few short stories and links to read more.
"""

SUBSCRIBERS = """\
email,name,status,tags
reader@example.org,Example Reader,subscribed,
"""

TEMPLATES_README = """\
# Your templates

Put a template here to use it instead of the built-in one of the same name:
this folder is searched first, then the built-in templates. Leave it empty to use
the built-in look.

The built-in templates (Jinja, autoescaped except the `.txt.j2` one):

| file | what it makes |
| --- | --- |
| `email.mjml.j2` | the email (MJML) |
| `web.html.j2` | the web copy (`web.html`, and each issue's page of `newsletter publish`): plain HTML5 |
| `content.html.j2` | markup both share: a section's links, the footer links |
| `email.txt.j2` | the plain-text part of the email |
| `preview.html.j2` | the preview page of `newsletter compose` (and `--watch`) |
| `archive.html.j2` | the archive page `index.html` of `newsletter publish` |
| `report.html.j2` | the page of `newsletter report`: numbers, charts and their tables |
| `web/base.html.j2` | the frame of every `newsletter serve` page: logo, name, postal address |
| `web/message.html.j2` | a serve page with a title, a few paragraphs and a link ("You are unsubscribed", …) |
| `web/action.html.j2` | a serve page asking one question with one button (unsubscribe, confirm); keep its hidden fields |
| `web/subscribe.html.j2` | the sign-up form; keep the field names `email`, `name`, `consent`, `website` (the honeypot) |
| `web/style.css.j2` | the serve pages' stylesheet, in the `[brand]` colours (the pages allow no script, no inline style) |
| `web/confirm_email.txt.j2`, `web/confirm_email.html.j2` | the email asking a new reader to confirm their sign-up |

To start from a built-in template, copy it here and edit the copy. They are in

    {builtin}

(or find them with `python -c "from newsletter_mailer.render import builtin_templates; print(builtin_templates())"`),
so for example:

    cp "{builtin}/email.mjml.j2" templates/
    mkdir -p templates/web && cp "{builtin}/web/subscribe.html.j2" templates/web/

`newsletter compose issues/<file>.yaml --watch` rebuilds the preview whenever a template here changes;
`newsletter serve` reads the `web/` ones when it starts (restart it after an edit).
Keep the unsubscribe link (`{{{{ unsubscribe_url }}}}`) and the postal address in `email.mjml.j2`
and `email.txt.j2`: the checks refuse to send without them.
"""


@dataclass
class InitReport:
    root: Path
    created: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)
    issue: Path | None = None


def _create(path: Path, text: str, result: InitReport, mode: int = files.PUBLIC) -> None:
    try:
        files.create_new(path, text, mode)  # exclusive: never overwrites, never follows a link
    except FileExistsError:
        result.existing.append(path)
        return
    except OSError as exc:
        raise NewsletterError(f"cannot create: {exc.strerror}", path=path) from None
    result.created.append(path)


def _folder(path: Path, result: InitReport) -> None:
    if path.is_dir():
        return
    if path.exists():
        raise NewsletterError("exists but is not a folder", path=path, hint="move it away and run init again")
    try:
        files.make_dir(path)
    except OSError as exc:
        raise NewsletterError(f"cannot create the folder: {exc.strerror}", path=path) from None
    result.created.append(path)


def _settings_schema() -> str:
    import json

    from newsletter_mailer.settings import settings_json_schema

    return json.dumps(settings_json_schema(), indent=2, ensure_ascii=False) + "\n"


def initialise(directory: Path, today: dt.date | None = None) -> InitReport:
    from newsletter_mailer.render import builtin_templates

    today = today or dt.date.today()
    result = InitReport(root=directory)
    _folder(directory, result)
    _create(directory / "newsletter.toml", SETTINGS, result)
    _create(directory / SCHEMA_FILE, _settings_schema(), result)  # beside it: `#:schema` works offline
    _folder(directory / "issues", result)
    issue = directory / "issues" / f"{today:%Y-%m}-first-issue.yaml"
    _create(issue, ISSUE.format(name="My Newsletter", date=today.isoformat(),
                                path=f"issues/{issue.name}"), result)
    result.issue = issue
    _folder(directory / "sequences", result)
    _create(directory / "sequences" / "welcome.yaml", SEQUENCE, result)
    _folder(directory / "sequences" / "welcome", result)
    _create(directory / "sequences" / "welcome" / "1-hello.yaml",
            WELCOME.format(name="My Newsletter", date=today.isoformat()), result)
    _create(directory / "subscribers.csv", SUBSCRIBERS, result, files.PRIVATE)  # it will hold addresses
    _folder(directory / "templates", result)
    _create(directory / "templates" / "README.md", TEMPLATES_README.format(builtin=builtin_templates()), result)
    from newsletter_mailer.state.folder import state_dir

    _secret(state_dir(directory), result)
    return result


def _secret(state: Path, result: InitReport) -> None:
    """32 random bytes for the readers' links now, so `serve` works before the first send."""
    from newsletter_mailer.unsubscribe import SECRET_FILE, load_secret

    _, note = load_secret(state, {}, create=True)
    (result.created if note else result.existing).append(state / SECRET_FILE)
