"""gRPC offer/fetch of plasmids: the .proto, the offer server, the fetch client, limits, TLS and the bulk path.

    >>> from plora.grpc.server import serve
    >>> from plora.grpc.checks import signature_check
    >>> from plora.grpc.client import fetch
    >>> server = serve("out/", port=0)                      # port 0: the OS picks a free one
    >>> r = fetch(server.address, "legal", "received/", checks=[signature_check(["keys/"])])
    >>> r.accepted, r.path, r.reasons
    (True, PosixPath('received/legal'), [])
    >>> server.stop()

| module | what |
|---|---|
| ``plasmid.proto``, ``proto`` | the wire format; stubs made by ``stubs`` (``make stubs``) or on import if stale |
| ``index`` | ``PlasmidIndex``: the plasmid folders under a root by id (rescanned per request, symlinks out ignored) |
| ``server`` | ``serve(root, port)``: GetInventory, Fetch (header + chunks), GetRevocations; fetch slots per peer |
| ``client`` | ``fetch(addr, id, dest, checks=...)``: staged, hashed while received, checked, renamed into place |
| ``checks`` | what a fetch checks on the staged folder: ``signature_check``, ``gate_check`` (and their reason lines) |
| ``bulk`` | the artifact bytes over a token-gated TCP socket beside gRPC (``sendfile``), and the hash/write pipeline |
| ``limits`` | ``Limits`` (sizes, deadlines, stream caps), id validation, address parsing |
| ``rootfs`` | opening a served file under the root: no symlink followed, regular files only, size checked first |
| ``tls`` | ``ServerTLS`` / ``ClientTLS`` (TLS and mutual TLS), ``make_test_pki`` |
"""
