"""Errors that end start-up with one line for the operator."""


class StartupError(SystemExit):
    """Start-up cannot go on (port taken, data dir locked, bad certificate...).

    A ``SystemExit`` so that twistd, the console script and any other runner print
    the one-line message and exit with status 1 instead of a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"pocket-agent: {message}")
        self.message = message
