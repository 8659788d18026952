"""A tiny IPv4 endpoint on a tap file descriptor: answers ARP and ping, and can ping others.

It stands in for a pod VM's NIC in tests: the tap is the one `HostNetwork.create_tap` made, opened
the way hostd opens it for QEMU (without the virtio header, so frames are plain Ethernet).
Every wait is bounded.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import select
import socket
import struct
import threading
import time

ETH_ARP = 0x0806
ETH_IP = 0x0800
BROADCAST = b"\xff" * 6


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def arp_frame(op: int, src_mac: bytes, src_ip: str, dst_mac: bytes, dst_ip: str) -> bytes:
    eth_dst = BROADCAST if op == 1 else dst_mac
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_IP, 6, 4, op, src_mac, socket.inet_aton(src_ip),
                       dst_mac if op == 2 else b"\0" * 6, socket.inet_aton(dst_ip))
    return eth_dst + src_mac + struct.pack("!H", ETH_ARP) + body


def icmp_frame(icmp_type: int, src_mac: bytes, dst_mac: bytes, src_ip: str, dst_ip: str,
               ident: int, seq: int, payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0x4000, 64, 1, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return dst_mac + src_mac + struct.pack("!H", ETH_IP) + hdr + icmp


class TapEndpoint:
    """Answers ARP for ``ip`` and ICMP echo to it; replies addressed to it go to `replies`."""

    def __init__(self, fd: int, *, mac: str, ip: str) -> None:
        self.fd, self.mac, self.ip = fd, mac_bytes(mac), ip
        self.replies: queue.Queue[tuple[str, str, bytes]] = queue.Queue()  # (kind, from ip, detail)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TapEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def send(self, frame: bytes) -> None:
        try:
            os.write(self.fd, frame)
        except ConnectionRefusedError:  # a UDP peer (QEMU) not listening yet: as if the frame was lost
            pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    frame = os.read(self.fd, 65536)
                except ConnectionRefusedError:  # a UDP peer (QEMU) not listening yet
                    continue
                self._handle(frame)

    def _handle(self, frame: bytes) -> None:
        if len(frame) < 14:
            return
        src = frame[6:12]
        (ethertype,) = struct.unpack("!H", frame[12:14])
        if ethertype == ETH_ARP and len(frame) >= 42:
            op, sha, spa, tpa = struct.unpack("!6xH6s4s6x4s", frame[14:42])
            sender, target = socket.inet_ntoa(spa), socket.inet_ntoa(tpa)
            if op == 1 and target == self.ip:
                self.send(arp_frame(2, self.mac, self.ip, sha, sender))
            elif op == 2 and target == self.ip:
                self.replies.put(("arp", sender, sha))
        elif ethertype == ETH_IP and len(frame) >= 42 and frame[23] == 1:
            ihl = (frame[14] & 0x0F) * 4
            (total,) = struct.unpack("!H", frame[16:18])
            sip, dip = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
            icmp = frame[14 + ihl:14 + total]   # short frames arrive padded to Ethernet's 60 bytes
            if dip != self.ip or len(icmp) < 8:
                return
            ident, seq = struct.unpack("!HH", icmp[4:8])
            if icmp[0] == 8:  # echo request -> reply
                self.send(icmp_frame(0, self.mac, src, self.ip, sip, ident, seq, icmp[8:]))
            elif icmp[0] == 0:
                self.replies.put(("echo", sip, icmp[8:]))

    def wait_reply(self, kind: str, from_ip: str, *, timeout: float = 3.0) -> bytes:
        """The next reply of ``kind`` from ``from_ip`` (others are dropped); TimeoutError if none."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                k, ip, detail = self.replies.get(timeout=left)
            except queue.Empty:
                break
            if k == kind and ip == from_ip:
                return detail
        raise TimeoutError(f"no {kind} reply from {from_ip}")

    def resolve(self, ip: str, *, attempts: int = 3) -> bytes:
        """ARP for ``ip``; its MAC."""
        for _ in range(attempts):
            self.send(arp_frame(1, self.mac, self.ip, BROADCAST, ip))
            try:
                return self.wait_reply("arp", ip, timeout=1.0)
            except TimeoutError:
                pass
        raise TimeoutError(f"{ip} did not answer ARP")

    def ping(self, ip: str, *, attempts: int = 3) -> None:
        """ARP then ICMP echo to ``ip``; returns when the echo comes back with our payload."""
        assert ipaddress.IPv4Address(ip)
        dst = self.resolve(ip)
        for seq in range(1, attempts + 1):
            payload = os.urandom(16)
            self.send(icmp_frame(8, self.mac, dst, self.ip, ip, 0x5056, seq, payload))
            try:
                if self.wait_reply("echo", ip, timeout=1.0) == payload:
                    return
            except TimeoutError:
                pass
        raise TimeoutError(f"{ip} did not answer ping")
