"""The daily send, one concern a module (data flows down this list):

- `run`: `DigestSender` and one `Run`: the run's state in one object, its batches in order.
- `preview`: a digest rendered without sending.
- `share`: the batches this process takes under lease when several processes share the day.
- `deliver`: handing claimed digests to the transport, three ways, and recording each outcome.
- `ledger`: every change of a digest's state, through one transition table, each a
  compare-and-set; the bounce policy.
- `pool`: a digest in flight (`Letter`), its message, and the forked worker processes.
- `select`: who is due and what they get (plans, candidate windows, the ranked selection).
- `state`: what a run is asked (`SendOptions`), holds (`RunState`) and reports (`SendReport`).
"""
