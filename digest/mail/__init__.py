"""The email: the view of a digest (`view`), rendering it to HTML and text (`render`, `tldr`),
composing the MIME message (`compose`) and handing it over (`transports`: outbox or SMTP)."""
