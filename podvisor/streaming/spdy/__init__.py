"""SPDY/3.1, as much of it as a Kubernetes streaming server needs: the frame codec (`frames`) and a
server-side session (`session`)."""

from podvisor.streaming.spdy.frames import (
    FrameDecoder,
    FrameEncoder,
    GoAwayStatus,
    RstStatus,
    SpdyProtocolError,
)
from podvisor.streaming.spdy.session import SpdySession, SpdyStream, StreamResetError

__all__ = [
    "FrameDecoder",
    "FrameEncoder",
    "GoAwayStatus",
    "RstStatus",
    "SpdyProtocolError",
    "SpdySession",
    "SpdyStream",
    "StreamResetError",
]
