"""Each project's history: the Records of its runs, kept on disk and paged to clients.

A :class:`History` appends Records to a current file, rotates it into compressed files
indexed by chunk, expires old ones, and answers ``get_messages`` one :class:`Page` at a
time without reading more than the page needs (``log``, ``query``, ``segments``). On
start-up it first repairs what a crash left behind and loads the files (``recovery``),
reporting what it fixed as a :class:`Repair`.
"""

from .log import History, Record, RunInThread, encode_record
from .query import MAX_PAGE, MAX_PAGE_BYTES, Page, Query
from .recovery import Repair
from .segments import CURRENT, INDEX

__all__ = [
    "CURRENT",
    "INDEX",
    "MAX_PAGE",
    "MAX_PAGE_BYTES",
    "History",
    "Page",
    "Query",
    "Record",
    "Repair",
    "RunInThread",
    "encode_record",
]
