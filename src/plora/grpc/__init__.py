"""gRPC offer/fetch of plasmids: the .proto, the offer server and the fetch client."""
