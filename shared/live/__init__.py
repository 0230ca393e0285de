"""Live transcription: one engine fed audio as it arrives, behind two WebSocket protocols.

    samples --Endpointer (incremental Silero VAD, and a second look at loud stretches)--> open utterance
    open utterance --encoder windows + TurnDetector (turns.py)--> cut at a speaker change
    open utterance --fast model every ~0.5 s + LocalAgreement-2--> partial words (stable, and a tentative tail)
    closed utterance --accurate model--> final words (replace the partials) --SpeakerTracker--> speaker
    every final --SpeakerTracker.settle (recent finals clustered again)--> corrections of earlier speakers
    speaker's centroid --VoiceNames (the caller's enrolled voices)--> its name, from the first final on

`LiveSession` (session.py) is the engine; it knows nothing of WebSockets. It reaches the models through
`LiveModels` (models.py), which submits stages to the same Runner as file jobs and batches the partials
of concurrent sessions. `LiveSessions` (registry.py) keeps sessions, their event logs for resume, and the
limits. shared/api/realtime.py (OpenAI Realtime) and shared/api/live_ws.py (the native /ws/stream) adapt it.
"""
