"""Ranking: papers scored for many subscribers at once, from their interests, their learned model
and the clicks of subscribers like them; then cut to good matches, shared out over the
interests, diversified and explained.

The method (measured in docs/evaluation.md):

- Papers are words and adjacent word pairs (`textmodel.TextModel`): a candidate is a BM25 vector,
  a query a unit TF-IDF vector. With the `semantic` extra, papers and phrases also have sentence
  embeddings (`embeddings`), and every score below gets a dense twin.
- Interests: the weighted phrases make one query, expanded by pseudo-relevance feedback: the
  `prf_papers` papers of the recent corpus that best match it are added to it (`prf_weight`), so
  that a subscriber with two tags is also served by the words those papers share.
- The learned model: the retraining (`training`) fits each subscriber's logistic regression on
  the papers they opened or liked against those they turned down, skipped, and the typical paper
  of the corpus; it is kept in dual form, as a weight per example paper and one for the corpus
  centroid, so that it is read in whatever vocabulary today's text model has.
- Each part is scaled by its spread over the reader's candidates, and the two are blended by
  evidence: w = n / (n + `evidence_scale`) for n positive papers, so that a new subscriber is served
  by their interests alone and evidence gradually takes over. `avoid` phrases and (for a reader
  with nothing opened yet) papers turned down push papers down; followed authors and categories
  add a share of the best score; "readers like you" multiply a paper's score by 1 + 2 x votes.
- A paper goes into an email only when it matches: it contains an interest phrase (its words,
  and its adjacent pairs, weighed by idf: `min_match`), or its embedding is close to the phrase's,
  or it is like the papers the subscriber opened, or readers like them opened it, or it is by a
  followed author. The top places are shared out over the interests in proportion to their
  weights (where an interest has good matches), near-duplicates are pushed apart, and every item
  says why it was chosen, naming only what it truly matched.

The package, by concept: `readers` (what the ranker knows of a subscriber, and what it returns),
`papers` (the day's candidates, the feedback pool and the example papers as matrices),
`community` ("readers like you"), `scoring` (every part of a score, for a chunk of readers at
once), `quotas` (sharing the top places out over the interests), `diversity` (top-k and MMR),
`reasons` (why each item was chosen), `ranker` (the `Ranker` that ties them together) and `store`
(the stored models and clicks the ranking reads, in batches).
"""
