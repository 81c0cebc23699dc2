"""The email and web templates: a folder an operator can edit or replace (DIGEST_TEMPLATES),
shipped in the wheel as the package data of `digest.templates`."""
