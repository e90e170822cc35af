"""Mail: rendering messages, senders (SMTP, console), and the outbox dispatcher."""
