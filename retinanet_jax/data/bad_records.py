"""Bad records met mid-run (a file that a disk or a sync turned to garbage after the run began):
stop (data.on_bad_record='stop', the default: the error names the record) or replace them
('skip').

A replaced record is swapped, wherever it is read, for the next good record of the split
(index i -> i + 1, i + 2, ... modulo the split's size): a pure function of the index, so a
resumed run reads exactly what the uninterrupted one read, and shapes stay static. Each
replacement is recorded once (`BadRecords.entries()`: split, record index, image name where
the source knows it, reason), and the run stops once more than `max_fraction` of the split is
bad (of its own share, with several processes). A resumed run takes up the list its run wrote
(training.hooks.bad_records_file). grain reads from several threads: the record keeps a lock.
"""

import dataclasses
import json
import sys
import threading
from pathlib import Path

from retinanet_jax.errors import UserError

ON_BAD_RECORD = ('stop', 'skip')


class TooManyBadRecords(UserError):
    """More records of the split went bad than data.max_bad_fraction allows."""


@dataclasses.dataclass
class BadRecords:
    """The records replaced so far, and the limit on them."""

    max_fraction: float = 0.01
    process_count: int = 1  # each process reads (and counts) its own share of a split
    _entries: dict = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def load(self, path) -> None:
        """Takes up the entries a run wrote to `path` before it was interrupted (if any)."""
        path = Path(path)
        if path.is_file():
            for e in json.loads(path.read_text()):
                self._entries[(e['split'], e['index'])] = e

    def add(self, split: str, index: int, size: int, name: str, reason: str) -> None:
        with self._lock:
            if (split, index) in self._entries:
                return
            self._entries[(split, index)] = {
                'split': split,
                'index': index,
                'name': name,
                'reason': reason,
            }
            count = sum(1 for s, _ in self._entries if s == split)
        print(f'warning: bad record replaced: {name}: {reason}', file=sys.stderr, flush=True)
        if count > self.max_fraction * size / self.process_count:
            raise TooManyBadRecords(
                f'{count} of {size} records of split {split!r} are bad, more than '
                f'config.data.max_bad_fraction={self.max_fraction}; the last: {name}: {reason}'
            )

    def entries(self) -> list[dict]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: (e['split'], e['index']))


@dataclasses.dataclass(frozen=True)
class SkippingRecords:
    """A random-access sequence of records (pipeline's Records) whose unreadable records are
    replaced as the module docstring says."""

    records: object
    bad: BadRecords
    name_of: object = None  # index -> a name for messages (default: the record's position)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        n = len(self.records)
        for k in range(n):
            i = (int(index) + k) % n
            try:
                return self.records[i]
            except (ValueError, OSError) as e:  # what the sources raise for a bad record
                reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else repr(e)
                self.bad.add(self.records.split, i, n, self._name(i), reason)
        raise TooManyBadRecords(f'every record of {self.records.split!r} is bad')

    def _name(self, index: int) -> str:
        if self.name_of is not None:
            return self.name_of(index)
        return f'{self.records.source.name} {self.records.split} record {index}'
