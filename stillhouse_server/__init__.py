"""The server side of the ``stillhouse`` command: its commands and the ``make run`` supervisor."""
