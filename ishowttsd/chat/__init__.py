"""Stream-chat intake: the ``[chat]`` moderation pipeline (pure code; no sockets, no engine).

Import from the modules (``chat.pipeline``, ``chat.settings``, ``chat.text``, ...): this package
re-exports nothing, so the plain text helpers stay importable from anywhere (``job.py`` uses the
one speech-length estimate of ``chat.text``) without loading the pipeline.
"""
