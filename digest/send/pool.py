"""Making the messages: a digest in flight (`Letter`), its message, and the worker processes.

A `Letter` is all a message needs of a digest and its subscriber: small, frozen and picklable,
the one form a digest takes between its claim and its delivery, here and in a worker process.

A run of many digests ranks its subscribers and makes their messages in forked processes
(`WorkerPool`) while this one claims, stores and delivers. They are forked once the candidates are
loaded, so each knows every paper, the ranker and the message maker without being sent them: a
ranking task is what ranking needs of a few plans (`select.Wanted`), a message task a few letters
and the rows of their papers among the candidates. The processes are started with the
pool's own method as their target, so nothing of theirs lives in a module.
"""

from __future__ import annotations

import datetime as dt
import gc
import itertools
import logging
import multiprocessing
import queue
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ..db import Database
from ..links import LinkMaker
from ..mail.compose import Composer, DkimKey, Outgoing, message_id
from ..mail.render import DigestView, RenderedDigest, Renderer
from ..mail.view import PaperViews, digest_view
from ..models import Digest, DigestItem, Paper, Subscriber
from ..settings import Settings
from . import heap

log = logging.getLogger(__name__)

#: Letters sent to a worker process at a time.
CHUNK = 8

#: What a worker ranks: some of the run's plans (`select.Wanted`) -> each one's `select.Choice`.
RankTask = Callable[[Sequence], list]


@dataclass(frozen=True, slots=True)
class Addressee:
    """What a message needs of its subscriber."""

    id: int
    email: str
    name: str | None
    interests: tuple[dict, ...]
    link_id: str

    @classmethod
    def of(cls, subscriber: Subscriber) -> Addressee:
        return cls(subscriber.id, subscriber.email, subscriber.name, tuple(subscriber.interests), subscriber.link_id)


@dataclass(frozen=True, slots=True)
class LetterItem:
    """What a message needs of one of the digest's items."""

    id: int
    rank: int
    reason: str


@dataclass(frozen=True, slots=True)
class Letter:
    """A digest in flight: what its message is made of, wherever it is made."""

    id: int
    local_date: dt.date
    to: Addressee
    items: tuple[LetterItem, ...]
    #: Where its papers are among the run's candidates (what a worker process knows them by);
    #: None for a digest read back from the database (its papers loaded with it).
    rows: tuple[int, ...] | None = None

    @classmethod
    def of(cls, digest: Digest, subscriber: Subscriber, items: Sequence[DigestItem | LetterItem], rows: Sequence[int] | None = None) -> Letter:
        return cls(digest.id, digest.local_date, Addressee.of(subscriber), tuple(LetterItem(i.id, i.rank, i.reason) for i in items),
                   None if rows is None else tuple(rows))

    @property
    def subscriber_id(self) -> int:
        return self.to.id

    @property
    def outbox_key(self) -> str:
        """The file name (without `.eml`) of the digest: its date, its id and a readable recipient."""
        return outbox_key(self.id, self.local_date, self.to.email)


def outbox_key(digest_id: int, local_date: dt.date, email: str) -> str:
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in email)[:80]
    return f"{local_date:%Y-%m-%d}_{digest_id:08d}_{readable}"


@dataclass(frozen=True)
class Unmade:
    """A message that could not be made, and why (in words for the operator)."""

    reason: str


def made(make: Callable[..., Outgoing], *args: object) -> Outgoing | Unmade:
    """`make(*args)`, or why it failed: whatever goes wrong in making one message is that
    message's failure, never the batch's (see `Delivery.unmade`)."""
    try:
        return make(*args)
    except Exception as exc:  # any error of one message's data or template
        log.debug("making a message failed", exc_info=True)
        return Unmade(f"{type(exc).__name__}: {exc}"[:500])


class Messages:
    """Makes a digest's message: its view (tracked links), rendered, composed (and signed).

    What does not change within a run is prepared once (`prepare`): the composer's fixed headers
    and transfer encoding, and what each paper shows (`PaperViews`), the same for every
    subscriber of the day."""

    def __init__(self, settings: Settings, renderer: Renderer, links: LinkMaker) -> None:
        self.settings = settings
        self.renderer = renderer
        self.links = links
        self.dkim = DkimKey.load(settings.dkim_key, settings.dkim_selector, settings.dkim_domain) if settings.dkim_key else None
        self.prepare(eight_bit=False)

    def prepare(self, eight_bit: bool) -> None:
        """A new run: 8bit bodies where its open transport carries them (else quoted-printable),
        and the papers' views worked out afresh. Called before worker processes fork, so that
        they share it."""
        self.composer = Composer(self.settings.sender, dkim_key=self.dkim, eight_bit=eight_bit)
        self.shown = PaperViews()

    def view(self, letter: Letter, papers: Sequence[Paper]) -> DigestView:
        return digest_view(self.links, letter, letter.to, letter.items, papers, self.shown)

    def render(self, letter: Letter, papers: Sequence[Paper]) -> RenderedDigest:
        return self.renderer.render(self.view(letter, papers))

    def message(self, letter: Letter, papers: Sequence[Paper], now: dt.datetime) -> Outgoing:
        view = self.view(letter, papers)
        return self.composer.compose(self.renderer.render(view), to_email=letter.to.email, to_name=letter.to.name,
                                     msg_id=message_id(letter.id, letter.local_date, self.settings.sender), unsubscribe_url=view.unsubscribe_url, date=now)


class WorkerDied(RuntimeError):
    """A worker process ended before answering (killed, out of memory): the run cannot go on."""


class WorkerFailed(RuntimeError):
    """Ranking failed in a worker process (as it would have failed the run in this one)."""


@dataclass(frozen=True)
class _Raised:
    """A worker's answer when its task raised: the error and its traceback, in words (an
    exception may not pickle)."""

    error: str
    where: str


class WorkerPool:
    """Forked processes that rank subscribers and make messages, in order, while this process
    does the rest.

    Fork only from a process with no other threads (such as `digest send`); no database
    connection crosses the fork (a worker opens its own to read histories). Answers come back in
    the order the tasks were given, however many batches are in hand."""

    def __init__(self, messages: Messages, papers: Sequence[Paper], workers: int, db: Database, rank: RankTask) -> None:
        self.messages = messages
        self.papers = papers
        self.workers = workers
        self.db = db
        self._rank = rank
        self._processes: list = []
        self._numbers = itertools.count()
        self._answers: dict[int, list] = {}

    def __enter__(self) -> WorkerPool:
        self.db.engine.dispose()  # no database connection crosses the fork
        context = multiprocessing.get_context("fork")
        self._tasks, self._results = context.Queue(), context.Queue()
        self._processes = [context.Process(target=self._serve, name=f"digest-worker-{n}", daemon=True) for n in range(self.workers)]
        # What the workers inherit is shared with this process until written to; the garbage
        # collector of a worker would write to every object it inherited (and so copy them all).
        # This process keeps them frozen too while the pool lives: they are the run's long-lived
        # state (the corpus, the text model, the plans), and each full pass of the collector over
        # them cost 0.2-0.3 CPU s, a dozen times a run of 10,000.
        gc.freeze()
        try:
            for process in self._processes:
                process.start()
        except BaseException:
            gc.unfreeze()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        gc.unfreeze()
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            process.join()
        self._tasks.cancel_join_thread()  # tasks no worker will read (a run stopped early) must not hold up the exit
        self._tasks.close()
        self._results.close()
        self._processes = []

    def _serve(self) -> None:
        """A worker: ranks plans and makes messages until told to stop. What each paper shows
        is worked out the first time one of this worker's messages needs it, and kept
        (`PaperViews`)."""
        for number, kind, task in iter(self._tasks.get, None):
            if kind == "rank":
                try:
                    answer = self._rank(task)
                except Exception as exc:  # the parent raises it: ranking fails the run, as it would there
                    answer = _Raised(f"{type(exc).__name__}: {exc}", traceback.format_exc())
                heap.trim()  # a batch's score matrices, freed, go back to the system (`heap`)
            else:
                letters, now = task
                answer = [made(self.messages.message, letter, [self.papers[row] for row in letter.rows], now) for letter in letters]
            self._results.put((number, answer))

    def rank(self, plans: Sequence) -> Iterator:
        """Each plan's `select.Choice`, in order (plans as `select.Wanted`): the work is shared
        out among the workers now."""
        share = -(-len(plans) // self.workers)
        return self._collect([self._put("rank", list(plans[start : start + share])) for start in range(0, len(plans), share)])

    def make(self, letters: Sequence[Letter], now: dt.datetime) -> Iterator[Outgoing | Unmade]:
        """The message of each letter (each with `rows`), in order: the work is handed out now."""
        return self._collect([self._put("make", (list(letters[start : start + CHUNK]), now)) for start in range(0, len(letters), CHUNK)])

    def _put(self, kind: str, task: object) -> int:
        number = next(self._numbers)
        self._tasks.put((number, kind, task))
        return number

    def _collect(self, numbers: list[int]) -> Iterator:
        for number in numbers:
            while number not in self._answers:
                try:
                    answered, answer = self._results.get(timeout=1.0)
                except queue.Empty:
                    dead = [p for p in self._processes if not p.is_alive()]
                    if dead:
                        raise WorkerDied(f"worker process {dead[0].name} ended (exit code {dead[0].exitcode})") from None
                    continue
                self._answers[answered] = answer
            answer = self._answers.pop(number)
            if isinstance(answer, _Raised):
                failed = WorkerFailed(f"ranking failed in a worker process: {answer.error}")
                failed.add_note(f"in the worker process:\n{answer.where}")
                raise failed
            yield from answer
