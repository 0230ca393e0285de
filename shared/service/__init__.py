"""The application service: one transcription from a request's audio and options, and its output formats."""
