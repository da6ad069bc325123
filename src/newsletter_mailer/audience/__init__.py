"""What readers told us: the audience store, imports and exports, and the readers of
bounces and provider events that feed it (SendGrid sync, the bounce mailbox)."""
