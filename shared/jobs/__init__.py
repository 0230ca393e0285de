"""Transcription jobs: submit once, poll or get called back.

    model.py         Job, JobStatus, DeliveryAttempt: the types, as stored and as the API shows them
    transitions.py   the state machine: pure moves from a stored job and an event to the next, or a refusal
    store.py         the JobStore port, the transitions applied once over an adapter's load / compare-and-set
    sqlite_store.py  the SQLite adapter (WAL, under the storage path)
    runner.py        worker threads that run queued jobs, and the janitor for expired results
    service.py       JobService: what the web layer calls; owns the store, runner and webhook sender
"""
