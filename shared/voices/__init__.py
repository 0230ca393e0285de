"""Enrolled voices: named voiceprints an owner keeps, to name speakers in transcripts (docs/voices.md)."""
