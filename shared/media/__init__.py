"""Audio in and out of files: decoding uploads, 16 kHz PCM files and their spans, the clip store."""
