"""The reproducible book: chapter execution, the offline HTML build, and notebook helpers.

Build side: :mod:`.toc` (which pages), :mod:`.params` (papermill parameters per profile),
:mod:`.prepare` (data a profile needs), :mod:`.execute` (papermill), :mod:`.vendor` (offline
JavaScript), :mod:`.site` (Jupyter Book), :mod:`.offline` (no CDN URL check).
Chapter side: :mod:`.paths`, :mod:`.paper`, :mod:`.results`, :mod:`.plots`, :mod:`.widgets`.
"""
