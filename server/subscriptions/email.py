"""Email notifications: "updated content is available", never the content.

Gravity SDOH CC requires the email channel of servers that offer subscriptions, and an email
must carry no PHI. A message names the subscription, the kind of notification and the event
numbers, and says where to fetch them (``$events``, with the subscriber's own credentials);
no resource, id, reference or topic filter. Sent through the configured SMTP relay
(``smtp_host``; the operator's, not a client's endpoint), with the delivery timeout.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from server.settings import Settings


class EmailError(Exception):
    """The relay refused or could not be reached (the reason is for ``$status``)."""


def message(
    settings: Settings, to: str, id: str, kind: str, first: int | None, last: int | None
) -> EmailMessage:
    base = settings.fhir_base
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    if kind == "handshake":
        msg["Subject"] = "Subscription set up"
        text = (
            f"Subscription {base}/Subscription/{id} is set up: new content will be announced here."
        )
    elif kind == "heartbeat":
        msg["Subject"] = "Subscription active"
        text = f"Subscription {base}/Subscription/{id} is active; there is no new content."
    else:
        msg["Subject"] = "Updated content is available"
        text = (
            f"Updated content is available for subscription {base}/Subscription/{id} "
            f"(events {first} to {last}). Retrieve it with your client:\n\n"
            f"GET {base}/Subscription/{id}/$events?eventsSinceNumber={first}"
            f"&eventsUntilNumber={last}\n"
        )
    msg.set_content(text + "\n\nThis message carries no health information.\n")
    return msg


def send(settings: Settings, msg: EmailMessage) -> None:
    """Send ``msg`` through the relay (blocking); raises ``EmailError``."""
    if settings.smtp_host is None:
        raise EmailError("no SMTP relay is configured")
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.subscription_timeout_seconds
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        raise EmailError(f"SMTP: {type(exc).__name__}: {exc}"[:300]) from exc
