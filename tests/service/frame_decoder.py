"""An incremental frame decoder for the tests: feed() bytes at any split, get whole messages.

Built from the wire module's own pieces (`protocol.frame_length`, `protocol.decode_body`),
so fuzzing it checks those on a byte stream cut anywhere. The product reads frames with
`protocol.read_message` from an asyncio stream and never needs it.
"""
from __future__ import annotations

from diffusion_core.protocol import HEADER_BYTES, MAX_FRAME_BYTES, decode_body, frame_length


class FrameDecoder:
    """Incremental decoder for a byte stream: feed() bytes, get whole messages back.

    After a ProtocolError the stream is out of sync and the decoder must be dropped.
    """

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES):
        self.max_bytes = max_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER_BYTES:
            length = frame_length(bytes(self._buf[:HEADER_BYTES]), self.max_bytes)
            end = HEADER_BYTES + length
            if len(self._buf) < end:
                break
            body = bytes(self._buf[HEADER_BYTES:end])
            del self._buf[:end]
            out.append(decode_body(body))
        return out
