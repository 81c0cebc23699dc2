"""digest: a self-hosted service that mails every subscriber one personalized, ranked digest of
new research papers a day.

The data flow, one module per concern: `ingest` reads sources into papers, `profiles` loads
subscribers, `ranking` scores papers for each subscriber, `render` and `mail` make the email,
`delivery` hands it to the outbox or SMTP, and `send` runs the daily job over all of them,
with `db` and `models` keeping the state.
"""

__version__ = "0.1.0"
