"""A simulated serial line nobody reads drops what does not fit, as a real line would,
and waits for a reader once, not once per line (a week of heartbeats to an unread port
must not take a week of stalls)."""

from __future__ import annotations

import os

from simulators.serial_link import PtyLink


def test_an_unread_pty_stalls_once_then_drops_at_once_until_someone_reads() -> None:
    link = PtyLink(stall_seconds=0.05)
    line = b"$WHBT,R01,1,20261117T223000Z*00\r\n" * 32  # about 1 KiB
    try:
        while not link.dropped:  # fill the pty's buffer; the first overflow waits 0.05 s, then drops
            link.write(line)
        first = link.dropped
        # Were it to wait again, this write would stall for an hour and the test time out.
        link.stall_seconds = 3600
        link.write(line)
        assert link.dropped == first + len(line)
        # A reader empties the line: writes go through again, nothing more is dropped.
        reader = os.open(link.port, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            while True:
                try:
                    if not os.read(reader, 65536):
                        break
                except BlockingIOError:
                    break
            link.write(line)
            assert link.dropped == first + len(line)
            received = b""
            while len(received) < len(line):
                received += os.read(reader, 65536)  # the write returned: its bytes are in the pty already
            assert received == line
        finally:
            os.close(reader)
    finally:
        link.close()
