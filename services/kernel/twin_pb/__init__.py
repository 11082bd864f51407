"""Generated protobuf and gRPC code for twin.v1 (do not edit; run `task proto`)."""
