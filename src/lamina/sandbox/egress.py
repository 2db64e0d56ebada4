"""Where a sandbox's outbound traffic may go: the internet yes, the host and private
networks no, as with Lambda's default networking.

slirp4netns (network.py) turns a sandbox's connections into the host's own sockets,
so without a rule a function reaches everything the host reaches: services
listening on the host's other addresses, the cloud metadata service
(169.254.169.254), the data centre's private networks. Each sandbox's network
namespace therefore gets `unreachable` routes for those destinations; the function
has no capabilities, so it cannot remove them. The host's own addresses are read
once at start-up. `LAMINA_EGRESS_ALLOW` (CIDRs) lets named ranges through.

The routes are netlink messages encoded once with pyroute2 and written on one
netlink socket per sandbox, inside its namespace (about 30 us, against 1.5 ms for
opening pyroute2's own socket object per sandbox).
"""

from __future__ import annotations

import concurrent.futures
import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from lamina.sandbox.base import SandboxError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never reachable from a function unless allowed: this host's networks, the
# link-local range (metadata services), private, shared (CGNAT) and reserved ranges.
BLOCKED_RANGES = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)
_RTN_UNREACHABLE = 7
_RT_TABLE_MAIN = 254
_RTPROT_STATIC = 4
_NLMSG_ERROR = 2


def _read_host_addresses() -> list[Network]:
    found: list[Network] = []
    with IPRoute() as ip:
        for address in ip.get_addr(family=socket.AF_INET):
            value = address.get_attr("IFA_ADDRESS")
            if value is None:
                continue
            found.append(ipaddress.ip_network(f"{value}/32"))
            found.append(ipaddress.ip_network(f"{value}/{address['prefixlen']}", strict=False))
    return found


def host_addresses() -> list[Network]:
    """This host's own IPv4 addresses (as /32s) and the networks they sit on."""
    # On a thread of its own: pyroute2's synchronous IPRoute runs an asyncio loop
    # inside, which cannot happen on a thread whose loop is already running.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_read_host_addresses).result()


def blocked_networks(extra: Iterable[Network], allowed: Iterable[Network]) -> list[Network]:
    """BLOCKED_RANGES and `extra`, minus what `allowed` names, as disjoint prefixes."""
    wanted = [ipaddress.ip_network(cidr) for cidr in BLOCKED_RANGES] + list(extra)
    result: list[Network] = []
    for network in ipaddress.collapse_addresses(n for n in wanted if n.version == 4):
        pieces: list[Network] = [network]
        for allow in allowed:
            next_pieces: list[Network] = []
            for piece in pieces:
                if allow.version != piece.version or not piece.overlaps(allow):
                    next_pieces.append(piece)
                elif not allow.supernet_of(piece):  # type: ignore[arg-type]
                    next_pieces.extend(piece.address_exclude(allow))  # type: ignore[arg-type]
            pieces = next_pieces
        result.extend(pieces)
    return result


def parse_allowed(value: str) -> list[Network]:
    try:
        return [ipaddress.ip_network(part.strip(), strict=False)
                for part in value.split(",") if part.strip()]
    except ValueError as error:
        raise SandboxError(f"LAMINA_EGRESS_ALLOW: {error}") from error


def _route_message(network: Network, sequence: int) -> bytes:
    message = rtmsg()
    message["family"] = socket.AF_INET
    message["dst_len"] = network.prefixlen
    message["table"] = _RT_TABLE_MAIN
    message["proto"] = _RTPROT_STATIC
    message["type"] = _RTN_UNREACHABLE
    message["attrs"] = [("RTA_DST", str(network.network_address))]
    message["header"]["type"] = RTM_NEWROUTE
    message["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    message["header"]["sequence_number"] = sequence
    message.encode()
    return bytes(message.data)


@dataclass(frozen=True)
class EgressRules:
    networks: tuple[Network, ...]
    messages: bytes

    @classmethod
    def for_host(cls, allowed: str = "") -> EgressRules:
        networks = tuple(blocked_networks(host_addresses(), parse_allowed(allowed)))
        return cls(networks, b"".join(_route_message(n, i + 1) for i, n in enumerate(networks)))

    def apply_here(self) -> None:
        """Add the routes to the calling thread's network namespace (see network.py)."""
        if not self.networks:
            return
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                           socket.NETLINK_ROUTE) as netlink:
            netlink.sendall(self.messages)
            acknowledged = 0
            while acknowledged < len(self.networks):
                data = netlink.recv(65536)
                offset = 0
                while offset + 20 <= len(data):
                    length = int.from_bytes(data[offset:offset + 4], "little")
                    kind = int.from_bytes(data[offset + 4:offset + 6], "little")
                    if kind == _NLMSG_ERROR:
                        code = int.from_bytes(data[offset + 16:offset + 20], "little", signed=True)
                        if code != 0:
                            raise OSError(-code, f"adding an egress route: {errno.errorcode.get(-code, code)}")
                        acknowledged += 1
                    offset += max((length + 3) & ~3, 20)
