"""Feed documents written for the tests, in the real formats (the recorded real ones stay in ../shared)."""

from __future__ import annotations

from xml.sax.saxutils import escape


def rss(items: list[dict], title: str = "cs.XX updates on arXiv.org") -> bytes:
    """An arXiv RSS 2.0 listing; each item: id, version, title, abstract, authors, categories, announce."""
    body = "".join(
        f"""
    <item>
      <title>{escape(i['title'])}</title>
      <link>https://arxiv.org/abs/{i['id']}</link>
      <description>arXiv:{i['id']}v{i.get('version', 1)} Announce Type: {i.get('announce', 'new')}
Abstract: {escape(i.get('abstract', 'An abstract.'))}</description>
      <guid isPermaLink="false">oai:arXiv.org:{i['id']}v{i.get('version', 1)}</guid>
      {''.join(f'<category>{c}</category>' for c in i.get('categories', ['cs.LG']))}
      <pubDate>Thu, 19 Nov 2026 00:00:00 -0500</pubDate>
      <arxiv:announce_type>{i.get('announce', 'new')}</arxiv:announce_type>
      <dc:creator>{escape(', '.join(i.get('authors', ['Ann Lee'])))}</dc:creator>
    </item>"""
        for i in items
    )
    return f"""<?xml version='1.0' encoding='UTF-8'?>
<rss xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/" version="2.0">
  <channel>
    <title>{escape(title)}</title>
    <link>http://rss.arxiv.org/rss/cs.XX</link>
    <description>Written for the tests.</description>{body}
  </channel>
</rss>
""".encode()


def api_atom(entries: list[dict], total: int | None = None, start: int = 0) -> bytes:
    """An arXiv API (`/api/query`) answer with opensearch paging."""
    body = "".join(
        f"""
  <entry>
    <id>http://arxiv.org/abs/{e['id']}v{e.get('version', 1)}</id>
    <title>{escape(e['title'])}</title>
    <updated>2026-11-18T10:00:00Z</updated>
    <published>2026-11-17T09:30:00Z</published>
    <summary>{escape(e.get('abstract', 'An abstract.'))}</summary>
    <link href="https://arxiv.org/abs/{e['id']}v{e.get('version', 1)}" rel="alternate" type="text/html"/>
    <link href="https://arxiv.org/pdf/{e['id']}v{e.get('version', 1)}" rel="related" type="application/pdf" title="pdf"/>
    <arxiv:primary_category term="{e.get('primary', 'cs.LG')}"/>
    {''.join(f'<category term="{c}" scheme="http://arxiv.org/schemas/atom"/>' for c in e.get('categories', ['cs.LG']))}
    {''.join(f'<author><name>{escape(a)}</name></author>' for a in e.get('authors', ['Ann Lee']))}
  </entry>"""
        for e in entries
    )
    return f"""<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns="http://www.w3.org/2005/Atom">
  <id>https://arxiv.org/api/test</id>
  <title>arXiv Query: written for the tests</title>
  <updated>2026-11-18T10:00:00Z</updated>
  <opensearch:itemsPerPage>{len(entries)}</opensearch:itemsPerPage>
  <opensearch:totalResults>{total if total is not None else len(entries)}</opensearch:totalResults>
  <opensearch:startIndex>{start}</opensearch:startIndex>{body}
</feed>
""".encode()


def oai_page(records: list[dict], token: str | None = None) -> bytes:
    """One page of OAI-PMH ListRecords, metadataPrefix=arXiv, with a resumption token or not."""
    body = "".join(
        f"""
    <record>
      <header{' status="deleted"' if r.get('deleted') else ''}>
        <identifier>oai:arXiv.org:{r['id']}</identifier>
        <datestamp>2026-11-18</datestamp>
      </header>{'' if r.get('deleted') else f'''
      <metadata>
        <arXiv xmlns="http://arxiv.org/OAI/arXiv/">
          <id>{r['id']}</id>
          <created>2026-11-16</created>
          <authors>{''.join(f'<author><keyname>{k}</keyname><forenames>{f}</forenames></author>' for f, k in r.get('authors', [('Ann', 'Lee')]))}</authors>
          <title>{escape(r['title'])}</title>
          <categories>{' '.join(r.get('categories', ['cs.LG']))}</categories>
          <abstract>{escape(r.get('abstract', 'An abstract.'))}</abstract>
        </arXiv>
      </metadata>'''}
    </record>"""
        for r in records
    )
    resumption = f'\n    <resumptionToken cursor="0" completeListSize="9">{token}</resumptionToken>' if token else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">
  <responseDate>2026-11-18T05:00:00Z</responseDate>
  <request verb="ListRecords" metadataPrefix="arXiv">http://oaipmh.arxiv.org/oai</request>
  <ListRecords>{body}{resumption}
  </ListRecords>
</OAI-PMH>
""".encode()
