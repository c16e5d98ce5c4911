"""kombu's filesystem transport (the embedded broker), with each message written whole before
it appears in the queue folder.

kombu writes a message by creating its final file and then writing into it, while a consumer
moves away any file with the right name: a consumer that polls between the two reads an empty
message (the worker dies on the JSON error) and the message is lost. Here the message is
written under a name consumers ignore and renamed into place, which is atomic.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: Any, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Consumers take files whose name after the first "." is "<queue>.msg": not this one.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        with open(partial, "wb") as fh:
            fh.write(str_to_bytes(dumps(message)))  # type: ignore[no-untyped-call]
        os.replace(partial, final)


class Transport(filesystem.Transport):
    Channel = Channel
