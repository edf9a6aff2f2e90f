"""Where an agent may be told to fetch from: an Offer's advertised address, checked before any connection.

    >>> from plora.swarm.offer_source import offer_refusal
    >>> offer_refusal("127.0.0.1:5001", caller="127.0.0.1", peers=[]) is None          # the caller's own IP
    True
    >>> offer_refusal("10.0.0.9:5001", caller="127.0.0.1", peers=[])                   # a third party
    "an offer must advertise the caller's own IP address (127.0.0.1), got '10.0.0.9:5001'"
    >>> offer_refusal("127.0.0.1:22", caller="127.0.0.1", peers=["127.0.0.1:5001"])    # another port of a peer's IP
    "an offer from 127.0.0.1 must advertise one of this agent's peers there (ports 5001), got '127.0.0.1:22'"

    >>> offer_sender("127.0.0.1:5001", caller="127.0.0.1", peers=["127.0.0.1:5001"])   # a peer: its own allowance
    '127.0.0.1:5001'
    >>> offer_sender("10.0.0.9:5001", caller="10.0.0.9", peers=[])                      # anyone else: by IP
    '10.0.0.9'

An Offer makes the receiver connect to the address it names. It is taken only as an IP literal equal to the caller's
address (a host name resolves wherever its owner likes; an IPv4-mapped IPv6 address counts as its IPv4 one). On an IP
several agents share (loopback, a NAT) a port could still name some other service there, so where the receiver's
peers include the caller's IP (given as IP literals), only those peers' ports are taken. Peers given by name are not
resolved here: for them, and for callers that are no peer, the IP rule alone applies.

The receiver handles a few Offers per sender at once (``Limits.max_offers_per_peer``): a sender is the peer its
(accepted) Offer names, so agents sharing an IP (a swarm on loopback) do not share an allowance, and otherwise the
caller's IP, since a caller that is no peer may name any port there.
"""

from __future__ import annotations

import ipaddress

from plora.errors import TransferError
from plora.grpc.limits import parse_address

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_literal(text: str) -> IP | None:
    """An IP literal (an IPv4-mapped IPv6 address as its IPv4 one), or None for anything else (a name)."""
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def _peer_ports(peers: list[str], ip: IP) -> set[int]:
    ports = set()
    for peer in peers:
        try:
            host, port = parse_address(peer)
        except TransferError:
            continue
        if ip_literal(host) == ip:
            ports.add(port)
    return ports


def offer_refusal(advertised: str, caller: str, peers: list[str]) -> str | None:
    """Why an Offer from ``caller`` (its IP as the server saw it) naming ``advertised`` is refused, or None.
    TransferError when ``advertised`` is no HOST:PORT."""
    host, port = parse_address(advertised)
    sender = ip_literal(caller)
    if sender is None or ip_literal(host) != sender:
        return (f"an offer must advertise the caller's own IP address ({sender or 'unknown'}), "
                f"got {advertised[:100]!r}")
    ports = _peer_ports(peers, sender)
    if ports and port not in ports:
        return (f"an offer from {sender} must advertise one of this agent's peers there "
                f"(ports {', '.join(map(str, sorted(ports)))}), got {advertised[:100]!r}")
    return None


def offer_sender(advertised: str, caller: str, peers: list[str]) -> str:
    """Whom an accepted Offer counts against for the per-sender cap: the peer it names (an IP:port among ``peers``),
    else the caller's IP."""
    host, port = parse_address(advertised)
    ip = ip_literal(host)
    if ip is not None and port in _peer_ports(peers, ip):
        return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    return caller
